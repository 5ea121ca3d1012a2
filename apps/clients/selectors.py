from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone

from apps.clients.keys import hash_secret, parse_key, secret_matches
from apps.clients.models import ClientApp, ClientKey
from apps.tenants.models import Organization

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
    key = (
        ClientKey.objects.select_related("client_app", "organization")
        .filter(prefix=parsed.prefix)
        .first()
        if parsed
        else None
    )
    secret_ok = secret_matches(
        parsed.secret if parsed else "", key.secret_hash if key else _DECOY_HASH
    )
    if key is None or not secret_ok:
        return None
    now = now or timezone.now()
    if not key.is_usable(now):
        return None
    return key


def origin_is_registered(*, origin: str) -> bool:
    """Whether any active app lists this browser origin (answers CORS preflights only).

    A preflight carries no key, so it cannot be scoped to one app; the real request is then
    checked against its own app's origins. The set is cached briefly: preflights are cheap.
    """
    origins = cache.get(REGISTERED_ORIGINS_CACHE_KEY)
    if origins is None:
        origins = sorted(
            {
                item
                for listed in ClientApp.objects.filter(is_active=True).values_list(
                    "allowed_origins", flat=True
                )
                for item in listed or ()
            }
        )
        cache.set(REGISTERED_ORIGINS_CACHE_KEY, origins, 60)
    return origin in origins
