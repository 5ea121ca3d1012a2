"""Verification names the first record that no longer matches its seal; lookups stay in-org."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit import selectors, services
from apps.audit.models import AuditSeal, PolicyChange, TokenGrant
from apps.audit.selectors import audit_chain_verify, grant_by_token
from apps.tenants.models import Role
from tests.conftest import make_world
from tests.factories import ClientAppFactory, ProfileFactory, TokenGrantFactory, token_for

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


# --- the dashboard: exact up to now, whatever the rollup has counted so far -------------------

OUTCOMES = [*["issued"] * 6, "denied_quota", "denied_policy", "upstream_error", "abandoned"]
COLUMNS = {"issued": 0, "denied_quota": 1, "denied_policy": 1, "upstream_error": 2, "abandoned": 2}


def _direct(grants, start, end, key=None) -> dict:
    """Settled grants asked for in ``[start, end)``, per ``key(grant)``: what an auditor
    counting rows by hand would find."""
    counts: dict = {}
    for grant in grants:
        if not (start <= grant.requested_at < end) or grant.outcome not in COLUMNS:
            continue
        group = key(grant) if key else None
        if key and group in (None, ""):
            continue
        counts.setdefault(group, [0, 0, 0])[COLUMNS[grant.outcome]] += 1
    return counts


def _random_history(rng, now, alpha, bravo) -> list[TokenGrant]:
    """Grants of both organisations over 100 days, written in the order they were asked for
    (each stamped up to 30 s before it got its id, as issuance does), then one or two
    rollups at random moments: some days rolled up, the rest still the tail."""
    worlds = [
        (
            [alpha.client_app, ClientAppFactory(organization=alpha.organization), None],
            [alpha.profile, ProfileFactory(organization=alpha.organization), None],
            [alpha.client_key.prefix, "alphakey2", ""],
        ),
        ([bravo.client_app], [bravo.profile], [bravo.client_key.prefix]),
    ]
    end_users = ["ann", "bob", "cyd", "dee", "member:7", ""]
    moments = sorted(
        now - timedelta(seconds=rng.uniform(0, 100 * 86400)) for _ in range(rng.randint(20, 90))
    )
    # Bursts in the last day and the last minutes: hours to fill, a tail to read.
    moments += sorted(now - timedelta(seconds=rng.uniform(0, 86400)) for _ in range(15))
    moments += sorted(now - timedelta(seconds=rng.uniform(0, 300)) for _ in range(5))
    moments.sort()
    rows = []
    for moment in moments:
        world = alpha if rng.random() < 0.8 else bravo
        apps, profiles, keys = worlds[world is bravo]
        rows.append(
            TokenGrant(
                organization=world.organization,
                client_app=rng.choice(apps),
                profile=rng.choice(profiles),
                client_key_prefix=rng.choice(keys),
                end_user=rng.choice(end_users),
                # Still waiting for Google: only just asked for; it holds the rollup back.
                outcome="pending" if moment > now - timedelta(seconds=20) else rng.choice(OUTCOMES),
                requested_at=moment - timedelta(seconds=rng.uniform(0, 30)),
            )
        )
    created = TokenGrant.objects.bulk_create(rows)
    rollups = sorted(
        now - timedelta(seconds=rng.uniform(-120, 100 * 86400)) for _ in range(rng.randint(0, 2))
    )
    for moment in rollups:
        services.usage_rollup(tally=services.RunTally(), now=moment)
    return [grant for grant in created if grant.organization_id == alpha.organization.pk]


@pytest.fixture
def fresh_orgs(db):
    """Alpha and Bravo with no grants yet: each case writes its own history."""
    return make_world("Alpha"), make_world("Bravo")


@pytest.mark.parametrize("seed", range(20))
def test_dashboard_numbers_equal_a_direct_count_of_the_grants(fresh_orgs, seed):
    rng = random.Random(seed)
    alpha, bravo = fresh_orgs
    now = timezone.now()
    grants = _random_history(rng, now, alpha, bravo)
    organization = alpha.organization
    keyed = {
        "client_app": lambda grant: grant.client_app_id,
        "profile": lambda grant: grant.profile_id,
        "key": lambda grant: grant.client_key_prefix,
        "end_user": lambda grant: grant.end_user,
    }
    bravo_names = {bravo.client_app.name, bravo.profile.name}

    for name in selectors.USAGE_RANGES:
        span = selectors.usage_span(name=name, now=now)
        buckets = selectors.usage_buckets(organization=organization, span=span)

        assert [b.start for b in buckets] == list(span.buckets)
        for bucket in buckets:
            expected = _direct(grants, bucket.start, bucket.end).get(None, [0, 0, 0])
            assert [bucket.issued, bucket.denied, bucket.errors] == expected, (name, bucket)
        totals = selectors.usage_totals(buckets)
        expected = _direct(grants, span.start, span.end).get(None, [0, 0, 0])
        assert [totals.issued, totals.denied, totals.errors] == expected, name
        for by, key in keyed.items():
            breakdown = selectors.usage_breakdown(
                organization=organization, span=span, by=by, limit=selectors.BREAKDOWN_ALL
            )
            shown = {row.value: [row.issued, row.denied, row.errors] for row in breakdown.rows}
            counted = _direct(grants, span.start, span.end, key)
            assert shown == {str(value): counts for value, counts in counted.items()}, (name, by)
            assert not bravo_names & {row.label for row in breakdown.rows}
            ranked = [(row.issued, row.denied + row.errors) for row in breakdown.rows]
            assert ranked == sorted(ranked, reverse=True)


def test_the_top_n_is_the_busiest_and_says_there_is_more(fresh_orgs):
    alpha, _ = fresh_orgs
    now = timezone.now()
    TokenGrant.objects.bulk_create(
        TokenGrant(
            organization=alpha.organization,
            end_user=f"user-{n:02d}",
            outcome="issued",
            requested_at=now - timedelta(minutes=n + 1),
        )
        for n in range(12)
        for _ in range(n + 1)  # user-11 asked 12 times, user-00 once
    )
    span = selectors.usage_span(name="7d", now=now)

    top = selectors.usage_breakdown(organization=alpha.organization, span=span, by="end_user")
    every = selectors.usage_breakdown(
        organization=alpha.organization, span=span, by="end_user", limit=selectors.BREAKDOWN_ALL
    )

    assert [row.value for row in top.rows] == [f"user-{n:02d}" for n in range(11, 1, -1)]
    assert top.more and not every.more and len(every.rows) == 12


def test_tokens_active_now_and_the_next_to_expire(fresh_orgs):
    alpha, bravo = fresh_orgs
    now = timezone.now()
    soon = TokenGrantFactory(
        organization=alpha.organization, requested_at=now - timedelta(minutes=29)
    )
    TokenGrantFactory(organization=alpha.organization, requested_at=now - timedelta(minutes=31))
    TokenGrantFactory(
        organization=alpha.organization, requested_at=now, lifecycle="session_window_closed"
    )
    TokenGrantFactory(
        organization=bravo.organization, requested_at=now - timedelta(minutes=30, seconds=-10)
    )

    active = selectors.tokens_active(organization=alpha.organization, now=now)

    assert (active.count, active.opening) == (2, 0)  # the newest's window is closed
    assert active.next_expiries[0] == soon.expire_time


def test_a_grant_stamped_before_the_rollups_last_but_written_after_it_is_counted(fresh_orgs):
    alpha, _ = fresh_orgs
    now = timezone.now()
    counted = TokenGrantFactory(
        organization=alpha.organization, requested_at=now - timedelta(minutes=10)
    )
    # Stamped 20 s earlier, but its row (and id) came after, and it was still PENDING when
    # the rollup ran: the rollup stops before it.
    late = TokenGrantFactory(
        organization=alpha.organization,
        requested_at=counted.requested_at - timedelta(seconds=20),
        outcome="pending",
    )
    services.usage_rollup(tally=services.RunTally(), now=now)
    TokenGrant.objects.filter(pk=late.pk).update(outcome="issued")
    span = selectors.usage_span(name="7d", now=now)

    totals = selectors.usage_totals(
        selectors.usage_buckets(organization=alpha.organization, span=span)
    )

    assert totals.issued == 2


def test_a_rollup_committing_while_the_dashboard_reads_counts_nothing_twice(
    fresh_orgs, monkeypatch
):
    alpha, _ = fresh_orgs
    now = timezone.now()
    for minutes in (30, 20, 10):
        TokenGrantFactory(
            organization=alpha.organization, requested_at=now - timedelta(minutes=minutes)
        )
    services.usage_rollup(tally=services.RunTally(), now=now - timedelta(minutes=15))
    read_position = selectors._rollup_position
    rollups = []

    def position_then_a_rollup_commits(organization):
        position = read_position(organization)
        if not rollups:  # beat's rollup lands between the cursor and the rollups being read
            rollups.append(services.usage_rollup(tally=services.RunTally(), now=now))
        return position

    monkeypatch.setattr(selectors, "_rollup_position", position_then_a_rollup_commits)
    span = selectors.usage_span(name="7d", now=now)

    buckets = selectors.usage_buckets(organization=alpha.organization, span=span)

    assert rollups and selectors.usage_totals(buckets).issued == 3


def test_search_ids_are_each_arms_matches_in_the_organisation_or_none_past_the_cap(two_orgs):
    alpha, bravo = two_orgs
    alice = TokenGrantFactory(organization=alpha.organization, end_user="Alice@acme.example")
    alina = TokenGrantFactory(organization=alpha.organization, end_user="alina@acme.example")
    TokenGrantFactory(organization=alpha.organization, end_user="bob@acme.example")
    TokenGrantFactory(organization=bravo.organization, end_user="alice@bravo.example")
    alphas = TokenGrant.objects.filter(organization=alpha.organization)

    found = selectors.grant_search_ids(alphas, "ALI", cap=10)
    past_the_cap = selectors.grant_search_ids(alphas, "ali", cap=1)

    assert found == {alice.pk, alina.pk}
    assert past_the_cap is None  # the list then filters by the condition itself
    assert set(alphas.filter(selectors.grant_search_condition("ali"))) == {alice, alina}
