"""Every statement issuance writes by hand, each built once from the models' own ``_meta``.

The ORM compiles a query on every call; on the token path that compilation costs more than
the statements themselves (docs/adr/0003-raw-sql-on-the-hot-path.md). So these are built
from the same field lists, columns, converters and ``get_db_prep_save`` the ORM uses, once
per process: a field added to a model comes along, and tests/issuance/store/test_sql.py
holds each to what the ORM would have stored or read. Identifiers come from the models;
values are always parameters.
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model

from apps.audit.models import TokenGrant
from apps.clients.models import ClientApp, ClientKey
from apps.issuance.models import ActiveTokenSlot, QuotaCounter
from apps.tenants.models import Organization

PENDING = TokenGrant.Outcome.PENDING


# --- A grant: its INSERT, and the UPDATE of a grant still PENDING -------------------------


@cache
def grant_insert() -> tuple[str, tuple]:
    """An INSERT of every column, as ``save(force_insert=True)`` sends it, returning the id."""
    quote = connection.ops.quote_name
    meta = TokenGrant._meta
    inserted = tuple(field for field in meta.concrete_fields if not field.primary_key)
    insert = (
        f"INSERT INTO {quote(meta.db_table)} "  # noqa: S608
        f"({', '.join(quote(field.column) for field in inserted)}) "
        f"VALUES ({', '.join(['%s'] * len(inserted))}) RETURNING {quote(meta.pk.column)}"
    )
    return insert, inserted


def grant_insert_values(grant: TokenGrant, fields: tuple, db: BaseDatabaseWrapper) -> list:
    return [field.get_db_prep_save(field.pre_save(grant, True), db) for field in fields]


@cache
def pending_grant_update(names: tuple[str, ...]) -> tuple[str, tuple]:
    """An UPDATE of the fields ``names`` on one grant, only while it is still PENDING: one
    the reaper has given up on (and maybe sealed) stays as the reaper left it. Parameters:
    the values, the grant's id, ``PENDING``."""
    quote = connection.ops.quote_name
    meta = TokenGrant._meta
    updated = tuple(meta.get_field(name) for name in names)
    update = (
        f"UPDATE {quote(meta.db_table)} "  # noqa: S608
        f"SET {', '.join(f'{quote(field.column)} = %s' for field in updated)} "
        f"WHERE {quote(meta.pk.column)} = %s AND {quote(meta.get_field('outcome').column)} = %s"
    )
    return update, updated


def pending_grant_update_values(grant: TokenGrant, fields: tuple, db: BaseDatabaseWrapper) -> list:
    values = [field.get_db_prep_save(getattr(grant, field.attname), db) for field in fields]
    return [*values, grant.pk, PENDING]


# --- A key (and its app) stamped as used, at most once a minute ------------------------


@cache
def key_use_updates() -> tuple[str, str]:
    """Two UPDATEs of ``last_used_at``: the key's by prefix, then its app's by id, each only
    if it was not stamped within the last minute (by any process). Parameters of each: the
    time, the prefix or the app's id, the time a minute before."""
    quote = connection.ops.quote_name

    def stamp(model: type[Model], by: str) -> str:
        meta, column = model._meta, quote(model._meta.get_field("last_used_at").column)
        return (
            f"UPDATE {quote(meta.db_table)} SET {column} = %s "  # noqa: S608
            f"WHERE {quote(meta.get_field(by).column)} = %s "
            f"AND ({column} IS NULL OR {column} < %s)"
        )

    return stamp(ClientKey, "prefix"), stamp(ClientApp, "id")


def key_use_values(
    prefix: str, app_id: int, at, cutoff, db: BaseDatabaseWrapper
) -> tuple[list, list]:
    field = ClientKey._meta.get_field("last_used_at")
    at, cutoff = field.get_db_prep_save(at, db), field.get_db_prep_save(cutoff, db)
    return [at, prefix, cutoff], [at, app_id, cutoff]


# --- A client key with its app and organisation, by prefix ------------------------------


@dataclass(frozen=True)
class _Part:
    model: type[Model]
    attnames: list[str]
    columns: list  # (Col, converters) per concrete field, in _meta order


@dataclass(frozen=True)
class KeyLookup:
    sql: str
    parts: list[_Part]
    vendor: str


_key_lookup: KeyLookup | None = None


def key_lookup(db: BaseDatabaseWrapper) -> KeyLookup:
    """``select_related("client_app", "organization").filter(prefix=…)``, compiled once.

    The same columns, joins and database converters as the ORM's query; one parameter, the
    prefix (unique)."""
    global _key_lookup
    if _key_lookup is not None and _key_lookup.vendor == db.vendor:
        return _key_lookup
    quote = db.ops.quote_name
    parts, selected = [], []
    for model, alias in ((ClientKey, "k"), (ClientApp, "a"), (Organization, "o")):
        fields = model._meta.concrete_fields
        columns = []
        for field in fields:
            col = field.get_col(alias)
            converters = db.ops.get_db_converters(col) + col.get_db_converters(db)
            columns.append((col, converters))
            selected.append(f"{alias}.{quote(field.column)}")
        parts.append(_Part(model, [field.attname for field in fields], columns))
    key_field = ClientKey._meta.get_field
    sql = (
        f"SELECT {', '.join(selected)} FROM {quote(ClientKey._meta.db_table)} k "  # noqa: S608
        f"INNER JOIN {quote(ClientApp._meta.db_table)} a "
        f"ON a.{quote(ClientApp._meta.pk.column)} = k.{quote(key_field('client_app').column)} "
        f"INNER JOIN {quote(Organization._meta.db_table)} o "
        f"ON o.{quote(Organization._meta.pk.column)} = "
        f"k.{quote(key_field('organization').column)} "
        f"WHERE k.{quote(key_field('prefix').column)} = %s"
    )
    _key_lookup = KeyLookup(sql, parts, db.vendor)
    return _key_lookup


def key_from_row(row: Any, lookup: KeyLookup, db: BaseDatabaseWrapper) -> ClientKey | None:
    """The key, its app and its organisation, as the ORM would have built them."""
    if row is None:
        return None
    instances, at = [], 0
    for part in lookup.parts:
        values = []
        for col, converters in part.columns:
            value = row[at]
            at += 1
            for converter in converters:
                value = converter(value, col, db)
            values.append(value)
        instances.append(part.model.from_db(db.alias, part.attnames, values))
    key, app, organization = instances
    ClientKey._meta.get_field("client_app").set_cached_value(key, app)
    ClientKey._meta.get_field("organization").set_cached_value(key, organization)
    return key


# --- The database quota engine's counters (apps/issuance/quotas.py) ---------------------


@dataclass(frozen=True)
class QuotaCounterStatements:
    upsert: str
    lock_live: str
    init_live: str
    purge_slots: str
    set_live: str
    insert_slot: str


@cache
def quota_counter_statements() -> QuotaCounterStatements:
    """The database engine's statements: conditional upserts the ORM cannot spell in one."""
    quote = connection.ops.quote_name
    counters, slots = quote(QuotaCounter._meta.db_table), quote(ActiveTokenSlot._meta.db_table)
    key, count, expires = quote("key"), quote("count"), quote("expires_at")
    organization = quote("organization_id")
    return QuotaCounterStatements(
        upsert=(
            f"INSERT INTO {counters} ({key}, {count}, {expires}) VALUES (%s, %s, %s) "  # noqa: S608
            f"ON CONFLICT ({key}) DO UPDATE SET {count} = {counters}.{count} + %s "
            f"WHERE {counters}.{count} < %s RETURNING {count}"
        ),
        lock_live=(
            f"UPDATE {counters} SET {count} = {count} WHERE {key} = %s RETURNING {count}"  # noqa: S608
        ),
        # Counts the slots already there; a concurrent first reservation keeps its count.
        init_live=(
            f"INSERT INTO {counters} ({key}, {count}, {expires}) "  # noqa: S608
            f"SELECT %s, COUNT(*), %s FROM {slots} WHERE {organization} = %s "
            f"ON CONFLICT ({key}) DO UPDATE SET {count} = {counters}.{count} RETURNING {count}"
        ),
        purge_slots=(
            f"DELETE FROM {slots} WHERE {organization} = %s AND {expires} <= %s"  # noqa: S608
        ),
        set_live=f"UPDATE {counters} SET {count} = %s WHERE {key} = %s",  # noqa: S608
        insert_slot=(
            f"INSERT INTO {slots} ({organization}, "  # noqa: S608
            f"{quote('grant_public_id')}, {expires}) VALUES (%s, %s, %s)"
        ),
    )
