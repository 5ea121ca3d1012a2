"""Where issuance's reads and writes run: one store per process, chosen from settings.

The flow (apps/issuance/services.py) is written once; what differs between the embedded
default and production is how its statements run:

- ``ThreadedStore`` (threaded.py): in issuance's own database threads, one hop per step. The
  embedded default (SQLite, the database quota engine), and PostgreSQL with
  ``ISSUANCE_ON_EVENT_LOOP=0`` (docs/adr/0010-issuance-database-threads.md).
- ``EventLoopStore`` (event_loop.py): on PostgreSQL with Redis quotas, the statements every
  request runs (the key lookup, the quota script with the PENDING row, the final update)
  run on the event loop with psycopg's and redis-py's asyncio clients, no thread hop
  (docs/adr/0002-issuance-on-the-event-loop.md). The rare ones go to the threads.

This package also holds every statement of the token path that bypasses the ORM (sql.py)
and the cursors that prepare them (connections.py): on this path compiling a query costs
more than running it (docs/adr/0003-raw-sql-on-the-hot-path.md). Nothing else in the code
writes SQL by hand.
"""

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from apps.issuance.store.connections import default_vendor

if TYPE_CHECKING:  # the stores import the quota engines, which import this package's SQL
    from apps.issuance.store.base import IssuanceStore

_chosen: "IssuanceStore | None" = None
_SETTINGS_THAT_CHOOSE = frozenset({"ISSUANCE_ON_EVENT_LOOP", "REDIS_URL", "DATABASES"})


def issuance_store() -> "IssuanceStore":
    """This process's store, chosen on first use (at startup: IssuanceConfig.ready)."""
    global _chosen
    if _chosen is None:
        _chosen = _choose()
    return _chosen


def _choose() -> "IssuanceStore":
    from apps.issuance.quotas import RedisQuotaEngine, quota_engine
    from apps.issuance.store.event_loop import EventLoopStore
    from apps.issuance.store.threaded import ThreadedStore

    both_have_asyncio_clients = default_vendor() == "postgresql" and isinstance(
        quota_engine(), RedisQuotaEngine
    )
    if settings.ISSUANCE_ON_EVENT_LOOP and both_have_asyncio_clients:
        return EventLoopStore()
    return ThreadedStore()


@receiver(setting_changed)
def _choose_again(*, setting: str, **kwargs) -> None:
    """Settings change at run time only in tests; the next request chooses afresh."""
    global _chosen
    if setting in _SETTINGS_THAT_CHOOSE:
        _chosen = None
