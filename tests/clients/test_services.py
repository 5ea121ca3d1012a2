from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.audit.models import PolicyChange
from apps.clients import keys, services
from apps.clients.models import ClientKey
from apps.clients.selectors import client_key_authenticate
from tests.factories import ClientAppFactory, ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(two_orgs):
    alpha, _ = two_orgs
    return ClientAppFactory(organization=alpha.organization, name="Alpha kiosk")


def new_key(app, actor=None):
    return services.client_key_create(
        organization=app.organization, client_app=app, actor=actor, label="ci"
    )


def test_a_new_key_authenticates_and_names_its_app_and_org(app):
    key, raw = new_key(app)

    found = client_key_authenticate(raw_key=raw)

    assert raw.startswith(f"eph_{key.prefix}_")
    assert found == key
    assert found.client_app == app
    assert found.organization == app.organization


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw[:-1] + ("A" if raw[-1] != "A" else "B"),  # wrong secret, right prefix
        lambda raw: "eph_" + "x" * 12 + raw[16:],  # unknown prefix
        lambda raw: raw.replace("eph_", "sk_", 1),
        lambda raw: raw[:20],
        lambda raw: "",
        lambda raw: raw + "_extra",
    ],
    ids=["wrong-secret", "unknown-prefix", "wrong-scheme", "truncated", "empty", "trailing"],
)
def test_anything_but_the_exact_key_fails(app, mangle):
    _, raw = new_key(app)

    assert client_key_authenticate(raw_key=mangle(raw)) is None


def test_the_secret_is_compared_in_constant_time(app, monkeypatch):
    _, raw = new_key(app)
    calls = []
    real = keys.hmac.compare_digest
    monkeypatch.setattr(keys.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))

    client_key_authenticate(raw_key=raw)
    client_key_authenticate(raw_key="eph_" + "z" * 12 + "_" + "z" * 40)  # unknown prefix

    assert len(calls) == 2  # a miss is compared against a decoy, not skipped


def test_a_rotated_key_works_until_its_deadline_and_not_after(app):
    old, old_raw = new_key(app)
    deadline = timezone.now() + timedelta(hours=1)

    new, new_raw = services.client_key_rotate(
        organization=app.organization, key=old, actor=None, grace_until=deadline
    )

    assert client_key_authenticate(raw_key=old_raw) == old
    assert client_key_authenticate(raw_key=new_raw) == new
    later = deadline + timedelta(seconds=1)
    assert client_key_authenticate(raw_key=old_raw, now=later) is None
    assert client_key_authenticate(raw_key=new_raw, now=later) == new
    old.refresh_from_db()
    assert old.status(later) == "expired"


def test_a_key_already_rotating_out_is_not_rotated_again(app):
    """A double-submitted rotate form makes one replacement and keeps the first deadline."""
    old, _ = new_key(app)
    deadline = timezone.now() + timedelta(hours=1)
    services.client_key_rotate(
        organization=app.organization, key=old, actor=None, grace_until=deadline
    )
    stale = ClientKey.objects.get(pk=old.pk)
    stale.expires_at = None  # what the second request read before the first one committed

    with pytest.raises(ValidationError, match="already being rotated out"):
        services.client_key_rotate(
            organization=app.organization,
            key=stale,
            actor=None,
            grace_until=deadline + timedelta(days=1),
        )

    assert ClientKey.objects.filter(client_app=app).count() == 2
    assert ClientKey.objects.get(pk=old.pk).expires_at == deadline


def test_rotation_grace_is_bounded(app):
    old, _ = new_key(app)

    for deadline in (timezone.now() - timedelta(minutes=1), timezone.now() + timedelta(days=31)):
        with pytest.raises(ValidationError):
            services.client_key_rotate(
                organization=app.organization, key=old, actor=None, grace_until=deadline
            )
    assert ClientKey.objects.filter(client_app=app).count() == 1


def test_a_revoked_key_fails_at_once(app):
    key, raw = new_key(app)

    services.client_key_revoke(organization=app.organization, key=key, actor=None)

    assert client_key_authenticate(raw_key=raw) is None
    change = PolicyChange.objects.filter(object_type="clients.clientkey").latest("id")
    assert (change.action, change.object_id) == ("update", str(key.pk))
    assert change.after["revoked_at"] is not None


def test_a_disabled_app_still_names_itself_so_the_refusal_is_audited(app):
    """Issuance refuses it (403, tests/issuance); authentication must still say whose it is."""
    key, raw = new_key(app)
    app.is_active = False
    app.save()

    assert client_key_authenticate(raw_key=raw) == key


def test_keys_of_another_org_cannot_be_touched(two_orgs, app):
    _, bravo = two_orgs
    foreign_app = ClientAppFactory(organization=bravo.organization)
    foreign_key, foreign_raw = new_key(foreign_app)

    with pytest.raises(ClientKey.DoesNotExist):
        services.client_key_revoke(organization=app.organization, key=foreign_key, actor=None)
    with pytest.raises(type(foreign_app).DoesNotExist):
        services.client_key_create(
            organization=app.organization, client_app=foreign_app, actor=None
        )

    assert client_key_authenticate(raw_key=foreign_raw) == foreign_key


def test_an_app_cannot_allow_another_orgs_profile(two_orgs):
    alpha, bravo = two_orgs
    foreign = ProfileFactory(organization=bravo.organization)

    with pytest.raises(type(foreign).DoesNotExist):
        services.client_app_create(
            organization=alpha.organization, actor=None, name="x", allowed_profiles=[foreign]
        )

    assert not alpha.organization.client_apps.filter(name="x").exists()  # nothing half-written


@pytest.mark.parametrize(
    "origins",
    [["app.example.com"], ["https://app.example.com/path"], ["ftp://x.test"], "https://x.test"],
)
def test_origins_must_be_bare_origins(two_orgs, origins):
    alpha, _ = two_orgs

    with pytest.raises(ValidationError) as caught:
        services.client_app_create(
            organization=alpha.organization, actor=None, name="x", allowed_origins=origins
        )

    assert "allowed_origins" in caught.value.message_dict
