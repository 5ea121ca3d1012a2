"""The hand-written statements store and read exactly what the ORM would, field by field.

They are built from the models' ``_meta``, so a new field comes along by itself; these tests
make sure of it: every field of a grant is set to something other than its default, written
once by the ORM and once by hand, and the stored rows compared column by column (on SQLite
and on PostgreSQL, where the event-loop store's asyncio statements are compared too).
"""

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import NOT_PROVIDED
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients.models import ClientKey
from apps.issuance import rules
from apps.issuance.store import event_loop, sql, threaded
from apps.issuance.store.connections import default_connection, preparing_cursor

pytestmark = pytest.mark.django_db(transaction=True)
ON_POSTGRESQL = connection.vendor == "postgresql"


def grant_with_every_field(world, **changes) -> TokenGrant:
    """A grant whose every column holds something other than its default."""
    now = timezone.now().replace(microsecond=123456)
    values = {
        "public_id": uuid.uuid4(),
        "organization": world.organization,
        "client_app": world.client_app,
        "client_key_prefix": world.client_key.prefix,
        "member": world.owner,
        "end_user": "end-user-ü",
        "profile": world.profile,
        "profile_slug": world.profile.slug,
        "profile_version": 7,
        "requested": {"uses": 1, "expire_seconds": 60},
        "request_body": {"uses": 1, "bidiGenerateContentSetup": {"model": "m"}},
        "outcome": TokenGrant.Outcome.ISSUED,
        "error_code": "none",
        "detail": "every field set",
        "requested_at": now,
        "issued_at": now + timedelta(seconds=1),
        "expire_time": now + timedelta(minutes=30),
        "new_session_expire_time": now + timedelta(minutes=1),
        "uses": 3,
        "upstream_latency_ms": 42,
        "lifecycle": TokenGrant.Lifecycle.ACTIVE,
        "session_window_closed_at": now + timedelta(minutes=2),
        "expired_at": now + timedelta(minutes=31),
        "request_id": "req-123",
        "ip": "2001:db8::7",
        "user_agent": "tests/1.0",
        "token_fingerprint": "f" * 64,
        "quota_reservation": {"slot": "s", "counter_keys": ["q:1"], "active_key": "active:1"},
    }
    values.update(changes)
    return TokenGrant(**values)


def stored_row(grant: TokenGrant) -> dict:
    """The grant's row as the database holds it, column by column (no ORM conversion)."""
    meta = TokenGrant._meta
    columns = [field.column for field in meta.concrete_fields]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(meta.db_table)} "  # noqa: S608
            f"WHERE {quote(meta.pk.column)} = %s",
            [grant.pk],
        )
        return dict(zip(columns, cursor.fetchone(), strict=True))


def without_identity(row: dict) -> dict:
    return {column: value for column, value in row.items() if column not in ("id", "public_id")}


def test_the_fixture_sets_every_field_a_grant_has(two_orgs):
    """A new TokenGrant field fails here until the parity tests below write it too."""
    grant = grant_with_every_field(two_orgs[0])

    for field in TokenGrant._meta.concrete_fields:
        if field.primary_key:
            continue
        value = getattr(grant, field.attname)
        default = field.default if field.default is not NOT_PROVIDED else None
        default = default() if callable(default) and field.name != "public_id" else default
        assert value not in (None, "", {}, [], default), f"set {field.name} in the fixture"


def test_the_hand_written_insert_stores_what_save_would(two_orgs):
    alpha, _ = two_orgs
    by_the_orm = grant_with_every_field(alpha)
    by_hand = grant_with_every_field(alpha, requested_at=by_the_orm.requested_at)
    for name in ("issued_at", "expire_time", "new_session_expire_time"):
        setattr(by_hand, name, getattr(by_the_orm, name))

    by_the_orm.save(force_insert=True)
    threaded.insert_grant(by_hand)

    assert by_hand.pk is not None and not by_hand._state.adding
    assert without_identity(stored_row(by_hand)) == without_identity(stored_row(by_the_orm))


@pytest.mark.skipif(not ON_POSTGRESQL, reason="the event-loop store is PostgreSQL's")
@pytest.mark.asyncio
async def test_the_event_loop_stores_insert_stores_what_save_would(two_orgs):
    alpha, _ = two_orgs
    by_the_orm = grant_with_every_field(alpha)
    by_hand = grant_with_every_field(alpha)
    for name in ("requested_at", "issued_at", "expire_time", "new_session_expire_time"):
        setattr(by_hand, name, getattr(by_the_orm, name))

    await sync_to_async(by_the_orm.save)(force_insert=True)
    await event_loop._insert_grant(by_hand)

    rows = await sync_to_async(lambda: (stored_row(by_hand), stored_row(by_the_orm)))()
    assert without_identity(rows[0]) == without_identity(rows[1])


@pytest.mark.parametrize(
    "names", [rules.ISSUED_FIELDS, rules.REFUSED_FIELDS, rules.FAILED_FIELDS], ids=str
)
@pytest.mark.parametrize("store", ["threads", "event-loop"])
def test_the_hand_written_update_of_a_pending_grant_writes_what_the_orm_would(
    two_orgs, names, store
):
    if store == "event-loop" and not ON_POSTGRESQL:
        pytest.skip("the event-loop store is PostgreSQL's")
    alpha, _ = two_orgs
    pending = {"outcome": TokenGrant.Outcome.PENDING, "lifecycle": "", "token_fingerprint": ""}
    by_the_orm, by_hand = (
        grant_with_every_field(alpha, **pending),
        grant_with_every_field(alpha, **pending),
    )
    by_the_orm.save(force_insert=True)
    by_hand.save(force_insert=True)
    final = grant_with_every_field(alpha, outcome=TokenGrant.Outcome.UPSTREAM_ERROR)
    for grant in (by_the_orm, by_hand):
        for name in names:
            setattr(grant, name, getattr(final, name))

    TokenGrant.objects.filter(pk=by_the_orm.pk).update(
        **{name: getattr(by_the_orm, name) for name in names}
    )
    if store == "threads":
        written = threaded.update_pending_grant(by_hand, names)
    else:
        from asgiref.sync import async_to_sync

        written = async_to_sync(event_loop._update_pending_grant)(by_hand, names)

    assert written is True
    assert without_identity(stored_row(by_hand)) == without_identity(stored_row(by_the_orm))


def test_the_update_leaves_a_grant_that_is_no_longer_pending_alone(two_orgs):
    reaped = grant_with_every_field(two_orgs[0], outcome=TokenGrant.Outcome.ABANDONED)
    reaped.save(force_insert=True)
    before = stored_row(reaped)

    reaped.outcome, reaped.token_fingerprint = TokenGrant.Outcome.ISSUED, "0" * 64

    assert threaded.update_pending_grant(reaped, rules.ISSUED_FIELDS) is False
    assert stored_row(reaped) == before


def test_the_key_lookup_builds_what_select_related_would(two_orgs):
    alpha, _ = two_orgs
    by_the_orm = ClientKey.objects.select_related("client_app", "organization").get(
        prefix=alpha.client_key.prefix
    )
    db = default_connection()
    lookup = sql.key_lookup(db)
    with preparing_cursor(db) as cursor:
        cursor.execute(lookup.sql, [alpha.client_key.prefix])
        by_hand = sql.key_from_row(cursor.fetchone(), lookup, db)

    for instance, expected in (
        (by_hand, by_the_orm),
        (by_hand.client_app, by_the_orm.client_app),
        (by_hand.organization, by_the_orm.organization),
    ):
        assert instance.get_deferred_fields() == set()  # nothing left to load later
        for field in type(instance)._meta.concrete_fields:
            assert getattr(instance, field.attname) == getattr(expected, field.attname), field.name
        assert not instance._state.adding and instance._state.db == expected._state.db
