import pytest
from django.http import Http404

from apps.tenants.models import Role
from apps.tenants.selectors import (
    GoogleIdentity,
    organization_get_for_user,
    organizations_switchable,
    signin_entitlements,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (
            {"email": "A@X.test", "email_verified": True, "hd": "X.test"},
            GoogleIdentity("a@x.test", True, "x.test"),
        ),
        (
            {"email": "a@gmail.com", "email_verified": "true"},
            GoogleIdentity("a@gmail.com", True, None),
        ),
        ({"email": "a@x.test", "email_verified": "false"}, GoogleIdentity("a@x.test", False, None)),
        ({"email": "a@x.test"}, GoogleIdentity("a@x.test", False, None)),
        ({"email": "a@x.test", "verified_email": True}, GoogleIdentity("a@x.test", True, None)),
    ],
)
def test_identity_from_claims(claims, expected):
    assert GoogleIdentity.from_claims(claims) == expected


def test_entitlements_come_from_hd_not_from_the_email_suffix(two_orgs):
    alpha, _ = two_orgs

    by_hd = signin_entitlements(identity=GoogleIdentity("z@other.test", True, "alpha.test"))
    by_suffix = signin_entitlements(identity=GoogleIdentity("z@alpha.test", True, None))

    assert [(e.organization, e.role) for e in by_hd] == [(alpha.organization, Role.MEMBER)]
    assert by_suffix == []


def test_an_invitation_wins_over_the_domain_role(two_orgs):
    alpha, _ = two_orgs
    identity = GoogleIdentity("invitee@alpha.test", True, "alpha.test")

    (entitlement,) = signin_entitlements(identity=identity)

    assert entitlement.role == Role.ADMIN
    assert entitlement.invitation == alpha.invitation


def test_foreign_and_missing_organisations_look_the_same(two_orgs):
    alpha, bravo = two_orgs

    for wanted in (bravo.organization.pk, 999_999, "not-a-number", None):
        with pytest.raises(Http404):
            organization_get_for_user(user=alpha.owner, organization_id=wanted)
    assert organization_get_for_user(user=alpha.owner, organization_id=alpha.organization.pk)


def test_switcher_lists_only_orgs_where_the_user_may_administer_or_audit(two_orgs, operator):
    alpha, bravo = two_orgs

    assert list(organizations_switchable(user=alpha.owner)) == [alpha.organization]
    assert list(organizations_switchable(user=alpha.users[Role.MEMBER])) == []
    assert set(organizations_switchable(user=operator)) == {
        alpha.organization,
        bravo.organization,
    }
