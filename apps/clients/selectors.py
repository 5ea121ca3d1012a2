import contextlib

from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from apps.clients.keys import parse_key, usable_key
from apps.clients.models import ClientApp, ClientKey
from apps.tenants.models import Organization

# What a cache backend raises when its server is down (Redis) or its folder is unwritable.
CACHE_ERRORS = (RedisError, OSError)
REGISTERED_ORIGINS_CACHE_KEY = "clients:registered-origins"


def client_key_list(*, organization: Organization, client_app: ClientApp) -> QuerySet[ClientKey]:
    return ClientKey.objects.filter(organization=organization, client_app=client_app)


def client_key_authenticate(*, raw_key: str, now=None) -> ClientKey | None:
    """The usable key behind a presented ``eph_…`` string, or None. The key names its org.

    Revoked keys and keys past their rotation deadline fail here. A disabled app or org is
    refused later, by issuance, so that the attempt is audited inside that organisation.
    The token endpoint looks keys up through issuance's store (the same lookup, compiled
    once: apps/issuance/store/sql.py) and decides with the same ``usable_key``.
    """
    parsed = parse_key(raw_key)
    key = (
        ClientKey.objects.select_related("client_app", "organization")
        .filter(prefix=parsed.prefix)
        .first()
        if parsed
        else None
    )
    return usable_key(parsed, key, now or timezone.now())


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
