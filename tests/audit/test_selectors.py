"""Verification names the first record that no longer matches its seal; lookups stay in-org."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit import services
from apps.audit.models import AuditSeal, PolicyChange, TokenGrant
from apps.audit.selectors import audit_chain_verify, grant_by_token
from apps.tenants.models import Role
from tests.factories import ClientAppFactory, TokenGrantFactory, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def sealed(two_orgs, settings):
    """Alpha with ten grants (one id gap where a row was rolled back) under three seals."""
    settings.AUDIT_SEAL_BATCH_SIZE = 4
    alpha, bravo = two_orgs
    grants = [TokenGrantFactory(organization=alpha.organization) for _ in range(5)]
    gap = TokenGrantFactory(organization=alpha.organization)
    gap_id = gap.pk
    gap.delete()
    grants += [TokenGrantFactory(organization=alpha.organization) for _ in range(5)]
    TokenGrantFactory(organization=bravo.organization)
    later = timezone.now() + timedelta(minutes=2)
    services.audit_seal_organization(organization=alpha.organization, now=later)
    services.audit_seal_organization(organization=bravo.organization, now=later)
    assert audit_chain_verify(organization=alpha.organization).ok
    return alpha, grants, gap_id


def test_an_untouched_chain_verifies_and_reports_its_head(sealed):
    alpha, grants, _ = sealed

    report = audit_chain_verify(organization=alpha.organization)

    head = AuditSeal.objects.filter(organization=alpha.organization).latest("sequence").hash
    assert (report.ok, report.grants, report.head) == (True, len(grants) + 1, head)
    assert report.changes == alpha.organization.policy_changes.count()


def test_one_changed_field_of_a_sealed_grant_is_named(sealed):
    alpha, grants, _ = sealed
    TokenGrant.objects.filter(pk=grants[6].pk).update(end_user="someone-else")

    report = audit_chain_verify(organization=alpha.organization)

    assert not report.ok
    assert f"grant {grants[6].public_id} (id {grants[6].pk}) was changed" in report.problem


def test_a_deleted_grant_is_named(sealed):
    alpha, grants, _ = sealed
    TokenGrant.objects.filter(pk=grants[2].pk).delete()

    report = audit_chain_verify(organization=alpha.organization)

    assert f"grant id {grants[2].pk} was deleted" in report.problem


def test_an_inserted_grant_is_named(sealed):
    alpha, _, gap_id = sealed
    forged = TokenGrantFactory(organization=alpha.organization, pk=gap_id)

    report = audit_chain_verify(organization=alpha.organization)

    assert f"grant {forged.public_id} (id {gap_id}) was inserted after sealing" in report.problem


def test_an_edited_policy_change_is_named(sealed):
    alpha, _, _ = sealed
    change = alpha.organization.policy_changes.order_by("id").first()
    PolicyChange.objects.filter(pk=change.pk).update(actor_label="nobody")

    report = audit_chain_verify(organization=alpha.organization)

    assert f"policy change id {change.pk} was changed" in report.problem


def test_a_rewritten_seal_or_a_missing_one_breaks_the_chain(sealed):
    alpha, _, _ = sealed
    seals = AuditSeal.objects.filter(organization=alpha.organization).order_by("sequence")
    AuditSeal.objects.filter(pk=seals[1].pk).update(grants_root="0" * 64)
    assert "seal #2" in audit_chain_verify(organization=alpha.organization).problem

    seals[1].delete()
    assert "expected seal #2" in audit_chain_verify(organization=alpha.organization).problem


def test_tampering_in_one_organisation_leaves_the_other_verifying(sealed, two_orgs):
    alpha, grants, _ = sealed
    _, bravo = two_orgs
    TokenGrant.objects.filter(pk=grants[0].pk).update(outcome="denied_policy")

    assert not audit_chain_verify(organization=alpha.organization).ok
    assert audit_chain_verify(organization=bravo.organization).ok


def test_a_pasted_token_or_fingerprint_finds_its_grant_in_the_org_only(two_orgs):
    alpha, bravo = two_orgs
    grant = TokenGrantFactory(organization=alpha.organization)
    token = token_for(grant)

    assert grant_by_token(organization=alpha.organization, token_or_fingerprint=token) == grant
    assert (
        grant_by_token(
            organization=alpha.organization, token_or_fingerprint=grant.token_fingerprint.upper()
        )
        == grant
    )
    assert grant_by_token(organization=bravo.organization, token_or_fingerprint=token) is None
    assert grant_by_token(organization=alpha.organization, token_or_fingerprint=" ") is None


def test_deleting_an_app_or_a_member_account_does_not_break_the_chain(two_orgs):
    alpha, _ = two_orgs
    app = ClientAppFactory(organization=alpha.organization, name="Short-lived app")
    member = alpha.users[Role.MEMBER]
    TokenGrantFactory(organization=alpha.organization, client_app=app)
    TokenGrantFactory(
        organization=alpha.organization, member=member, end_user=f"member:{member.pk}"
    )
    services.audit_seal_organization(
        organization=alpha.organization, now=timezone.now() + timedelta(minutes=2)
    )

    app.delete()
    member.delete()

    assert audit_chain_verify(organization=alpha.organization).ok
