"""The demo tenant that `manage.py dev` and `seed_demo` create, through the real services."""

import secrets
from dataclasses import asdict, dataclass

from django.db import transaction

from apps.clients import services as client_services
from apps.clients.models import ClientApp
from apps.policies import services as policy_services
from apps.policies.models import LiveConstraintProfile, LockMode
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
DEMO_PROFILE = {
    "slug": "demo-voice",
    "name": "Demo voice tutor",
    "description": "Audio answers from a patient tutor; the client cannot change the setup.",
    "model": "gemini-2.0-flash-live-001",
    "config": {
        "response_modalities": ["AUDIO"],
        "system_instruction": "You are a patient tutor. Keep answers short.",
        "session_resumption": {},
    },
    "lock_mode": LockMode.WHOLE_SETUP,
    "uses": 1,
    "expire_seconds": 1800,
    "new_session_seconds": 60,
    "members_may_use": True,
}
DEMO_APP_NAME = "Demo web app"
DEMO_KEY_LABEL = "seed_demo"


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
    given, so a demo password never has to live in the repository. What it creates leaves the
    admin home's onboarding checklist with one step open, the first token, which the `curl`
    that `dev` prints takes (tests/journeys/test_onboarding.py holds it to that).
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

    profile = LiveConstraintProfile.objects.filter(
        organization=organization, slug=DEMO_PROFILE["slug"]
    ).first() or policy_services.profile_create(
        organization=organization, actor=None, **DEMO_PROFILE
    )
    app = ClientApp.objects.filter(organization=organization, name=DEMO_APP_NAME).first()
    if app is None:
        app = client_services.client_app_create(
            organization=organization,
            actor=None,
            name=DEMO_APP_NAME,
            description="The demo's client app; seed_demo gives it a fresh key each run.",
            allowed_profiles=[profile],
            allowed_origins=["http://127.0.0.1:8000", "http://localhost:8000"],
        )
    for old_key in app.keys.filter(label=DEMO_KEY_LABEL, revoked_at__isnull=True):
        client_services.client_key_revoke(organization=organization, key=old_key, actor=None)
    _, raw_key = client_services.client_key_create(
        organization=organization, client_app=app, actor=None, label=DEMO_KEY_LABEL
    )

    return {
        "profile": {"slug": profile.slug, "model": profile.model, "version": profile.version},
        "client_app": {"id": app.pk, "name": app.name},
        "client_key": raw_key,
        "organization": {
            "id": organization.pk,
            "slug": organization.slug,
            "name": organization.name,
            "domain": DEMO_DOMAIN,
        },
        "users": [asdict(login) for login in logins],
    }
