"""The demo tenant that `manage.py dev` and `seed_demo` create, through the real services."""

import secrets
from dataclasses import asdict, dataclass

from django.db import transaction

from apps.tenants import services as tenant_services
from apps.tenants.models import Domain, Organization, Role, User
from apps.tenants.selectors import membership_get

DEMO_ORGANIZATION_SLUG = "demo"
DEMO_DOMAIN = "demo.example"
DEMO_USERS = (
    (f"owner@{DEMO_DOMAIN}", Role.OWNER),
    (f"admin@{DEMO_DOMAIN}", Role.ADMIN),
    (f"auditor@{DEMO_DOMAIN}", Role.AUDITOR),
    (f"member@{DEMO_DOMAIN}", Role.MEMBER),
)
OPERATOR_USERNAME = "operator"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    role: str


def _user_with_password(username: str, password: str, *, superuser: bool = False) -> User:
    user, _ = User.objects.get_or_create(
        username=username, defaults={"email": username if "@" in username else ""}
    )
    user.set_password(password)
    user.is_superuser = user.is_staff = superuser
    user.save()
    return user


@transaction.atomic
def demo_seed(*, password: str | None = None) -> dict:
    """Create (or find) the demo organisation and its users; give each login a password.

    Idempotent: rows are found, not duplicated. Passwords are new on every run unless one is
    given, so a demo password never has to live in the repository.
    """
    organization = Organization.objects.filter(slug=DEMO_ORGANIZATION_SLUG).first()
    if organization is None:
        organization = tenant_services.organization_create(
            name="Demo Organisation", slug=DEMO_ORGANIZATION_SLUG
        )
    if not Domain.objects.filter(name=DEMO_DOMAIN).exists():
        tenant_services.domain_create(organization=organization, name=DEMO_DOMAIN, is_verified=True)

    logins = []
    operator_password = password or secrets.token_urlsafe(12)
    _user_with_password(OPERATOR_USERNAME, operator_password, superuser=True)
    logins.append(DemoLogin(OPERATOR_USERNAME, operator_password, "operator"))
    for email, role in DEMO_USERS:
        user_password = password or secrets.token_urlsafe(12)
        user = _user_with_password(email, user_password)
        membership = membership_get(organization=organization, user=user)
        if membership is None:
            tenant_services.membership_create(organization=organization, user=user, role=role)
        elif membership.role != role:
            tenant_services.membership_update_role(
                organization=organization, membership=membership, role=role
            )
        logins.append(DemoLogin(email, user_password, role.label.lower()))

    return {
        "organization": {
            "id": organization.pk,
            "slug": organization.slug,
            "name": organization.name,
            "domain": DEMO_DOMAIN,
        },
        "users": [asdict(login) for login in logins],
    }
