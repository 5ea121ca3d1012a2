from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.audit.models import PolicyChange
from apps.tenants import services
from apps.tenants.models import Domain, GeminiCredential, Invitation, Membership, Role
from apps.tenants.selectors import GoogleIdentity, gemini_api_key_for, signin_entitlements
from portal.crypto import SecretUnreadable
from tests.factories import DomainFactory, InvitationFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_invitation_create_normalises_the_address_and_replaces_an_open_one(two_orgs):
    alpha, _ = two_orgs
    first = services.invitation_create(
        organization=alpha.organization, email="New@Partner.test", role=Role.ADMIN, invited_by=None
    )
    second = services.invitation_create(
        organization=alpha.organization,
        email="new@partner.test",
        role=Role.AUDITOR,
        invited_by=alpha.owner,
    )

    first.refresh_from_db()
    assert first.email == "new@partner.test"
    assert first.status == "revoked"
    assert second.status == "pending"
    assert second.invited_by == alpha.owner
    assert second.expires_at > timezone.now() + timedelta(days=6)


def test_invitation_in_the_past_is_refused_and_nothing_is_written(two_orgs):
    alpha, _ = two_orgs
    before = Invitation.objects.count()

    with pytest.raises(ValidationError, match="future"):
        services.invitation_create(
            organization=alpha.organization,
            email="x@partner.test",
            role=Role.MEMBER,
            invited_by=None,
            expires_at=timezone.now() - timedelta(seconds=1),
        )

    assert Invitation.objects.count() == before


def test_invitation_revoke_refuses_another_orgs_invitation(two_orgs):
    alpha, bravo = two_orgs

    with pytest.raises(Invitation.DoesNotExist):
        services.invitation_revoke(organization=alpha.organization, invitation=bravo.invitation)

    bravo.invitation.refresh_from_db()
    assert bravo.invitation.revoked_at is None


def test_the_last_owner_can_be_neither_demoted_nor_removed(two_orgs):
    alpha, _ = two_orgs
    owner = Membership.objects.get(user=alpha.owner)

    with pytest.raises(ValidationError, match="at least one owner"):
        services.membership_update_role(
            organization=alpha.organization, membership=owner, role=Role.ADMIN
        )
    with pytest.raises(ValidationError, match="at least one owner"):
        services.membership_delete(organization=alpha.organization, membership=owner)

    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_an_owner_can_step_down_once_another_owner_exists(two_orgs):
    alpha, _ = two_orgs
    MembershipFactory(organization=alpha.organization, role=Role.OWNER)
    owner = Membership.objects.get(user=alpha.owner)

    services.membership_update_role(
        organization=alpha.organization, membership=owner, role=Role.MEMBER
    )

    owner.refresh_from_db()
    assert owner.role == Role.MEMBER


def test_membership_services_refuse_another_orgs_membership(two_orgs):
    alpha, bravo = two_orgs
    foreign = Membership.objects.get(user=bravo.users[Role.MEMBER])

    with pytest.raises(Membership.DoesNotExist):
        services.membership_update_role(
            organization=alpha.organization, membership=foreign, role=Role.OWNER
        )
    with pytest.raises(Membership.DoesNotExist):
        services.membership_delete(organization=alpha.organization, membership=foreign)

    assert Membership.objects.get(pk=foreign.pk).role == Role.MEMBER


def test_only_the_operator_claims_domains(two_orgs, operator):
    alpha, _ = two_orgs

    with pytest.raises(PermissionDenied):
        services.domain_create(organization=alpha.organization, name="x.test", actor=alpha.owner)
    domain = services.domain_create(
        organization=alpha.organization, name="X.Test", actor=operator, is_verified=True
    )

    assert (domain.name, domain.is_verified) == ("x.test", True)
    assert domain.verified_at is not None


# --- domain verification by DNS (tests/tenants/test_domain_dns.py has the lookup itself) ----


def _claim(world, name="claim.alpha.test"):
    return DomainFactory(
        organization=world.organization, name=name, is_verified=False, verified_at=None
    )


def _publish(dns_server, domain, token=None):
    dns_server.txt(
        f"_ephemera-challenge.{domain.name}",
        f"ephemera-verification={token or domain.verification_token}",
    )


def _domain_changes(domain):
    return PolicyChange.objects.filter(object_type="tenants.domain", object_id=str(domain.pk))


def test_each_claim_gets_its_own_verification_token(two_orgs):
    alpha, _ = two_orgs
    first, second = _claim(alpha), _claim(alpha, "other.alpha.test")

    assert len(first.verification_token) >= 32
    assert first.verification_token != second.verification_token


@pytest.mark.parametrize(
    ("published", "result"),
    [
        ("own", "found"),
        ("other", "TXT present but the value does not match"),
        (None, "no TXT record"),
    ],
)
def test_domain_check_dns_records_what_it_found_and_audits_it(
    two_orgs, dns_server, published, result
):
    alpha, _ = two_orgs
    claim = _claim(alpha)
    if published:
        _publish(dns_server, claim, token=None if published == "own" else "not-this-claims")
    admin = alpha.users[Role.ADMIN]
    before = timezone.now()

    services.domain_check_dns(organization=alpha.organization, domain=claim, actor=admin)

    claim.refresh_from_db()
    assert claim.last_check_result == result
    assert claim.last_checked_at >= before
    assert (claim.is_verified, claim.verified_at, claim.verified_by) == (False, None, None)
    change = _domain_changes(claim).get()
    assert (change.actor, change.action) == (admin, PolicyChange.Action.UPDATE)
    assert change.before["last_check_result"] == ""
    assert change.after["last_check_result"] == result


def test_a_found_record_lets_nobody_in_until_the_operator_verifies(two_orgs, dns_server, operator):
    alpha, _ = two_orgs
    claim = _claim(alpha)
    _publish(dns_server, claim)
    identity = GoogleIdentity(
        email="new@claim.alpha.test", email_verified=True, hosted_domain="claim.alpha.test"
    )

    services.domain_check_dns(organization=alpha.organization, domain=claim, actor=alpha.owner)
    before_the_operator = signin_entitlements(identity=identity)
    services.domain_verify(organization=alpha.organization, domain=claim, actor=operator)

    assert before_the_operator == []
    assert [e.organization for e in signin_entitlements(identity=identity)] == [alpha.organization]
    claim.refresh_from_db()
    assert (claim.is_verified, claim.verified_by) == (True, operator)
    assert claim.verified_at is not None


@pytest.mark.parametrize("role", [Role.MEMBER, Role.AUDITOR])
def test_below_admin_cannot_run_a_dns_check(two_orgs, dns_server, role):
    alpha, _ = two_orgs
    claim = _claim(alpha)
    _publish(dns_server, claim)

    with pytest.raises(PermissionDenied):
        services.domain_check_dns(
            organization=alpha.organization, domain=claim, actor=alpha.users[role]
        )

    claim.refresh_from_db()
    assert (claim.last_checked_at, claim.last_check_result) == (None, "")
    assert not _domain_changes(claim).exists()
    assert dns_server.zone.queries == []


def test_an_admin_of_alpha_cannot_check_bravos_domain(two_orgs, dns_server):
    alpha, bravo = two_orgs
    admin = alpha.users[Role.ADMIN]

    with pytest.raises(Domain.DoesNotExist):
        services.domain_check_dns(organization=alpha.organization, domain=bravo.domain, actor=admin)
    with pytest.raises(PermissionDenied):  # naming Bravo itself: not Bravo's admin
        services.domain_check_dns(organization=bravo.organization, domain=bravo.domain, actor=admin)

    bravo.domain.refresh_from_db()
    assert bravo.domain.last_checked_at is None
    assert dns_server.zone.queries == []


def test_who_verified_is_recorded_and_cleared_with_the_verification(two_orgs, operator):
    alpha, _ = two_orgs
    created = services.domain_create(
        organization=alpha.organization, name="new.alpha.test", is_verified=True, actor=operator
    )
    seeded = services.domain_create(
        organization=alpha.organization, name="seed.alpha.test", is_verified=True
    )
    verified_by_on_create = created.verified_by

    services.domain_update(
        organization=alpha.organization,
        domain=created,
        name=created.name,
        is_verified=False,
        actor=operator,
    )

    assert verified_by_on_create == operator
    assert (seeded.is_verified, seeded.verified_by) == (True, None)  # the system, no person
    created.refresh_from_db()
    assert (created.is_verified, created.verified_at, created.verified_by) == (False, None, None)


def test_renaming_a_claim_forgets_the_check_of_the_old_name(two_orgs, dns_server, operator):
    alpha, _ = two_orgs
    claim = _claim(alpha)
    _publish(dns_server, claim)
    services.domain_check_dns(organization=alpha.organization, domain=claim, actor=alpha.owner)

    services.domain_update(
        organization=alpha.organization,
        domain=claim,
        name="renamed.alpha.test",
        is_verified=False,
        actor=operator,
    )

    claim.refresh_from_db()
    assert (claim.last_checked_at, claim.last_check_result) == (None, "")


def test_join_is_idempotent_and_uses_up_the_invitation(two_orgs):
    alpha, _ = two_orgs
    user = UserFactory(username="ivy@partner.test")
    invitation = InvitationFactory(
        organization=alpha.organization, email="ivy@partner.test", role=Role.ADMIN
    )
    identity = GoogleIdentity(email="ivy@partner.test", email_verified=True, hosted_domain=None)

    services.memberships_join_for_identity(user=user, identity=identity)
    again = services.memberships_join_for_identity(user=user, identity=identity)

    assert again == []  # the invitation is used up; the membership stays
    assert Membership.objects.get(user=user).role == Role.ADMIN
    invitation.refresh_from_db()
    assert invitation.accepted_by == user


def test_join_refuses_an_unverified_identity(two_orgs):
    user = UserFactory(username="u@alpha.test")
    identity = GoogleIdentity(
        email="u@alpha.test", email_verified=False, hosted_domain="alpha.test"
    )

    assert services.memberships_join_for_identity(user=user, identity=identity) == []
    assert not Membership.objects.filter(user=user).exists()


def test_reencrypt_moves_every_gemini_key_to_the_newest_key(two_orgs, settings):
    alpha, bravo = two_orgs
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    before = {c.pk: (c.ciphertext, c.updated_at) for c in GeminiCredential.objects.all()}
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]

    result = services.gemini_credentials_reencrypt()

    assert result.rotated == 2
    assert result.unreadable == []
    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key can go now
    assert gemini_api_key_for(organization=alpha.organization) == "alpha-gemini-key-0000"
    assert gemini_api_key_for(organization=bravo.organization) == "bravo-gemini-key-0000"
    for credential in GeminiCredential.objects.all():
        assert credential.ciphertext != before[credential.pk][0]
        assert credential.updated_at == before[credential.pk][1]  # the secret did not change
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    with pytest.raises(SecretUnreadable):
        gemini_api_key_for(organization=alpha.organization)


def test_reencrypt_names_rows_no_key_opens_and_leaves_them_alone(two_orgs, settings):
    alpha, _ = two_orgs
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key was lost
    stored = GeminiCredential.objects.get(organization=alpha.organization).ciphertext

    result = services.gemini_credentials_reencrypt()

    assert result.rotated == 0
    assert result.unreadable == ["alpha", "bravo"]
    assert GeminiCredential.objects.get(organization=alpha.organization).ciphertext == stored


# --- invitations e-mailed (issue 18) ---------------------------------------------------------

SIGNIN_URL = "https://ephemera.example.com/accounts/login/"


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again on leaving: nothing listens there


def test_invitation_send_mails_the_link_and_records_it(two_orgs, mailoutbox):
    alpha, _ = two_orgs
    invitation = services.invitation_create(
        organization=alpha.organization,
        email="grace@partner.test",
        role=Role.AUDITOR,
        invited_by=alpha.owner,
        expires_at=timezone.now() + timedelta(days=3),
    )

    delivery = services.invitation_send(
        organization=alpha.organization,
        invitation=invitation,
        signin_url=SIGNIN_URL,
        actor=alpha.owner,
    )

    assert delivery == services.InvitationDelivery.SENT
    (mail,) = mailoutbox
    assert mail.to == ["grace@partner.test"]
    assert mail.reply_to == [alpha.owner.email]
    assert mail.subject == "You are invited to Alpha Org on Ephemera"
    expiry = timezone.localtime(invitation.expires_at).strftime("%-d %B %Y, %H:%M")
    html, kind = mail.alternatives[0]
    assert kind == "text/html"
    for body in (mail.body, html):
        assert SIGNIN_URL in body
        assert "owner@alpha.test" in body  # who invited
        assert "Alpha Org" in body
        assert "Auditor" in body
        assert expiry in body
    assert f'<a href="{SIGNIN_URL}"' in html
    invitation.refresh_from_db()
    assert invitation.send_count == 1
    assert invitation.last_sent_at is not None
    change = PolicyChange.objects.filter(object_type="tenants.invitation").latest("pk")
    assert (change.action, change.actor) == ("update", alpha.owner)
    assert (change.before["send_count"], change.after["send_count"]) == (0, 1)


def send_invitation(world):
    return services.invitation_send(
        organization=world.organization,
        invitation=world.invitation,
        signin_url=SIGNIN_URL,
        actor=world.owner,
    )


def test_invitation_send_again_counts_each_sending(two_orgs, mailoutbox, clock):
    alpha, _ = two_orgs

    first = send_invitation(alpha)
    clock.advance(minutes=5)
    again = send_invitation(alpha)

    alpha.invitation.refresh_from_db()
    assert (first, again) == (services.InvitationDelivery.SENT, services.InvitationDelivery.SENT)
    assert alpha.invitation.send_count == 2
    assert len(mailoutbox) == 2


def test_an_invitation_is_not_mailed_again_too_soon_or_too_often(two_orgs, mailoutbox, clock):
    """Otherwise an owner could use the platform's sender to mail any address endlessly."""
    alpha, _ = two_orgs
    send_invitation(alpha)
    clock.advance(minutes=4, seconds=59)

    too_soon = send_invitation(alpha)
    for _ in range(services.INVITATION_MAX_SENDS):
        clock.advance(minutes=5)
        send_invitation(alpha)
    clock.advance(days=1)
    too_often = send_invitation(alpha)

    alpha.invitation.refresh_from_db()
    assert too_soon == too_often == services.InvitationDelivery.THROTTLED
    assert alpha.invitation.send_count == services.INVITATION_MAX_SENDS
    assert len(mailoutbox) == services.INVITATION_MAX_SENDS


def test_a_mail_server_that_is_down_loses_no_invitation_and_logs_no_password(
    two_orgs, mailoutbox, settings, caplog
):
    alpha, _ = two_orgs
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", _closed_port()
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "mailer", "smtp-pass-9f8e7d"
    changes = PolicyChange.objects.count()

    delivery = services.invitation_send(
        organization=alpha.organization,
        invitation=alpha.invitation,
        signin_url=SIGNIN_URL,
        actor=alpha.owner,
    )

    assert delivery == services.InvitationDelivery.FAILED
    alpha.invitation.refresh_from_db()
    assert (alpha.invitation.status, alpha.invitation.send_count) == ("pending", 0)
    assert PolicyChange.objects.count() == changes  # nothing was sent, nothing to record
    (record,) = [r for r in caplog.records if r.getMessage() == "invitation_email_failed"]
    assert record.error == "ConnectionRefusedError"
    assert "smtp-pass-9f8e7d" not in caplog.text


def test_a_portal_without_email_sends_nothing_and_says_so(two_orgs, mailoutbox, settings):
    alpha, _ = two_orgs
    settings.EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"

    delivery = services.invitation_send(
        organization=alpha.organization,
        invitation=alpha.invitation,
        signin_url=SIGNIN_URL,
        actor=alpha.owner,
    )

    assert delivery == services.InvitationDelivery.DISABLED
    alpha.invitation.refresh_from_db()
    assert alpha.invitation.send_count == 0


@pytest.mark.parametrize(
    "closed",
    [
        {"revoked_at": timezone.now()},
        {"expires_at": timezone.now() - timedelta(minutes=1)},
    ],
    ids=["revoked", "expired"],
)
def test_only_an_open_invitation_is_sent(two_orgs, mailoutbox, closed):
    alpha, _ = two_orgs
    invitation = InvitationFactory(organization=alpha.organization, **closed)

    with pytest.raises(ValidationError, match="only an open invitation can be sent"):
        services.invitation_send(
            organization=alpha.organization,
            invitation=invitation,
            signin_url=SIGNIN_URL,
            actor=alpha.owner,
        )

    assert mailoutbox == []


def test_invitation_send_refuses_another_orgs_invitation(two_orgs, mailoutbox):
    alpha, bravo = two_orgs

    with pytest.raises(Invitation.DoesNotExist):
        services.invitation_send(
            organization=alpha.organization,
            invitation=bravo.invitation,
            signin_url=SIGNIN_URL,
            actor=alpha.owner,
        )

    assert mailoutbox == []


def test_an_invitation_may_stay_open_for_thirty_days_at_most(two_orgs):
    alpha, _ = two_orgs

    with pytest.raises(ValidationError, match="at most 30 days") as refused:
        services.invitation_create(
            organization=alpha.organization,
            email="later@partner.test",
            role=Role.MEMBER,
            invited_by=alpha.owner,
            expires_at=timezone.now() + timedelta(days=30, minutes=1),
        )

    assert set(refused.value.message_dict) == {"expires_at"}
    assert not Invitation.objects.filter(email="later@partner.test").exists()
