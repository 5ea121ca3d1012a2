import pytest
from django.db import IntegrityError

from apps.audit.models import PolicyChange
from apps.audit.services import audited
from apps.audit.snapshots import REDACTED, snapshot
from apps.tenants import services as tenant_services
from apps.tenants.models import Role

pytestmark = pytest.mark.django_db


def test_a_failed_write_leaves_no_record(two_orgs):
    alpha, _ = two_orgs
    membership = alpha.owner.memberships.get()
    before = PolicyChange.objects.count()

    with (
        pytest.raises(IntegrityError),
        audited(
            organization=alpha.organization,
            actor=alpha.owner,
            instance=membership,
            action=PolicyChange.Action.UPDATE,
        ),
    ):
        membership.user_id = None
        membership.save()

    assert PolicyChange.objects.count() == before


def test_snapshots_redact_secrets_but_say_whether_they_are_set(two_orgs):
    alpha, _ = two_orgs

    data = snapshot(alpha.credential)

    assert data["ciphertext"] == REDACTED
    assert data["last_four"] == "0000"
    assert snapshot(alpha.client_key)["secret_hash"] == REDACTED


def test_a_deletion_is_recorded_with_the_row_it_removed(two_orgs):
    alpha, _ = two_orgs
    membership = alpha.users[Role.MEMBER].memberships.get()
    membership_id = membership.pk

    tenant_services.membership_delete(
        organization=alpha.organization, membership=membership, actor=alpha.owner
    )

    change = PolicyChange.objects.get(object_type="tenants.membership", action="delete")
    assert change.object_id == str(membership_id)
    assert change.before["role"] == Role.MEMBER
    assert change.after is None
    assert change.actor_label == alpha.owner.email


def test_system_writes_are_attributed_to_the_system(two_orgs):
    alpha, _ = two_orgs

    tenant_services.invitation_create(
        organization=alpha.organization, email="x@y.test", role=Role.MEMBER, invited_by=None
    )

    change = PolicyChange.objects.filter(object_type="tenants.invitation").last()
    assert (change.actor, change.actor_label) == (None, "system")


def test_changes_are_read_only_in_the_admin_even_for_the_operator(client, two_orgs, operator):
    alpha, _ = two_orgs
    change = PolicyChange.objects.filter(organization=alpha.organization).first()
    client.force_login(operator)
    url = f"/admin/audit/policychange/{change.pk}/"

    page = client.get(url + "change/")
    refused = client.post(url + "delete/", {"post": "yes"})

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert refused.status_code == 403
    assert PolicyChange.objects.filter(pk=change.pk).exists()
