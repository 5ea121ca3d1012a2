import contextlib
from dataclasses import dataclass

from django.core.cache import cache
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model, QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from apps.clients.keys import ParsedKey, hash_secret, parse_key, secret_matches
from apps.clients.models import ClientApp, ClientKey
from apps.tenants.models import Organization
from portal.db import async_hot_cursor, default_connection, hot_cursor

# What a cache backend raises when its server is down (Redis) or its folder is unwritable.
CACHE_ERRORS = (RedisError, OSError)
REGISTERED_ORIGINS_CACHE_KEY = "clients:registered-origins"
# Compared against when the prefix is unknown, so a miss costs the same as a wrong secret.
_DECOY_HASH = hash_secret("decoy")


def client_key_list(*, organization: Organization, client_app: ClientApp) -> QuerySet[ClientKey]:
    return ClientKey.objects.filter(organization=organization, client_app=client_app)


def client_key_authenticate(*, raw_key: str, now=None) -> ClientKey | None:
    """The usable key behind a presented ``eph_…`` string, or None. The key names its org.

    Revoked keys and keys past their rotation deadline fail here. A disabled app or org is
    refused later, by issuance, so that the attempt is audited inside that organisation.
    """
    parsed = parse_key(raw_key)
    key = _key_with_app_and_org(parsed.prefix) if parsed else None
    return _usable(parsed, key, now)


async def client_key_authenticate_async(*, raw_key: str, now=None) -> ClientKey | None:
    """``client_key_authenticate`` on the event loop (PostgreSQL only: ``async_hot_cursor``)."""
    parsed = parse_key(raw_key)
    key = await _key_with_app_and_org_async(parsed.prefix) if parsed else None
    return _usable(parsed, key, now)


def _usable(parsed: ParsedKey | None, key: ClientKey | None, now) -> ClientKey | None:
    secret_ok = secret_matches(
        parsed.secret if parsed else "", key.secret_hash if key else _DECOY_HASH
    )
    if key is None or not secret_ok:
        return None
    if not key.is_usable(now or timezone.now()):
        return None
    return key


@dataclass(frozen=True)
class _Part:
    model: type[Model]
    attnames: list[str]
    columns: list  # (Col, converters) per concrete field, in _meta order


@dataclass(frozen=True)
class _KeyLookup:
    sql: str
    parts: list[_Part]
    vendor: str


_key_lookup: _KeyLookup | None = None


def _key_lookup_for_connection(db: BaseDatabaseWrapper) -> _KeyLookup:
    """``select_related("client_app", "organization").filter(prefix=…)``, compiled once.

    The same columns, joins and database converters as the ORM's query (built from the
    models' ``_meta``, so new fields come along), without compiling the query on every call:
    this runs on every token request.
    """
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
    _key_lookup = _KeyLookup(sql, parts, db.vendor)
    return _key_lookup


def _key_with_app_and_org(prefix: str) -> ClientKey | None:
    db = default_connection()
    lookup = _key_lookup_for_connection(db)
    with hot_cursor(db) as cursor:
        cursor.execute(lookup.sql, [prefix])
        row = cursor.fetchone()  # the prefix is unique
    return _key_from_row(row, lookup, db)


async def _key_with_app_and_org_async(prefix: str) -> ClientKey | None:
    async with async_hot_cursor() as cursor:
        lookup = _key_lookup_for_connection(cursor.db)
        await cursor.execute(lookup.sql, [prefix])
        row = await cursor.fetchone()
    return _key_from_row(row, lookup, cursor.db)


def _key_from_row(row, lookup: _KeyLookup, db: BaseDatabaseWrapper) -> ClientKey | None:
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


def origin_is_registered(*, origin: str) -> bool:
    """Whether any active app lists this browser origin (answers CORS preflights only).

    A preflight carries no key, so it cannot be scoped to one app; the real request is then
    checked against its own app's origins. The set is cached briefly: preflights are cheap.
    """
    try:
        origins = cache.get(REGISTERED_ORIGINS_CACHE_KEY)
    except CACHE_ERRORS:  # the cache (Redis) is down: the database still knows
        return origin in _registered_origins()
    if origins is None:
        origins = _registered_origins()
        with contextlib.suppress(CACHE_ERRORS):
            cache.set(REGISTERED_ORIGINS_CACHE_KEY, origins, 60)
    return origin in origins


def _registered_origins() -> list[str]:
    return sorted(
        {
            item
            for listed in ClientApp.objects.filter(is_active=True).values_list(
                "allowed_origins", flat=True
            )
            for item in listed or ()
        }
    )
