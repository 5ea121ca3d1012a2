from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.tenants import services
from apps.tenants.models import GeminiCredential, Invitation, Membership, Role
from apps.tenants.selectors import GoogleIdentity, gemini_api_key_for
from portal.crypto import SecretUnreadable
from tests.factories import InvitationFactory, MembershipFactory, UserFactory

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
