from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.audit import services
from apps.audit.models import TokenGrant
from tests.factories import TokenGrantFactory

pytestmark = pytest.mark.django_db


def seal(*worlds):
    for world in worlds:
        services.audit_seal_organization(
            organization=world.organization, now=timezone.now() + timedelta(minutes=2)
        )


def test_verify_audit_passes_an_untouched_chain(two_orgs, capsys):
    alpha, bravo = two_orgs
    TokenGrantFactory(organization=alpha.organization)
    seal(alpha, bravo)

    call_command("verify_audit")

    out = capsys.readouterr().out
    assert "OK alpha: 2 seals, 2 grants" in out
    assert "OK bravo" in out


def test_verify_audit_fails_and_names_the_altered_grant(two_orgs, capsys):
    alpha, bravo = two_orgs
    grant = TokenGrantFactory(organization=alpha.organization)
    seal(alpha, bravo)
    TokenGrant.objects.filter(pk=grant.pk).update(detail="rewritten")

    with pytest.raises(CommandError, match="alpha"):
        call_command("verify_audit")

    out = capsys.readouterr().out
    assert "FAILED alpha" in out and str(grant.public_id) in out
    assert "OK bravo" in out


def test_verify_audit_for_one_org_and_an_unknown_one(two_orgs, capsys):
    alpha, bravo = two_orgs
    seal(alpha, bravo)

    call_command("verify_audit", "--org", "bravo")
    assert "alpha" not in capsys.readouterr().out
    with pytest.raises(CommandError, match="No organisation"):
        call_command("verify_audit", "--org", "nope")
