"""The store's interface, and what both stores do alike."""

import asyncio
import concurrent.futures
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta

from apps.audit.models import TokenGrant
from apps.clients.models import ClientKey
from apps.issuance import observe, rules
from apps.issuance.contract import Caller
from apps.issuance.policy_cache import IssuancePolicy, cached_issuance_policy
from apps.issuance.rules import Approved, PendingGrant
from apps.tenants.models import Organization

logger = logging.getLogger("apps.issuance.store")

_abandoning: set[asyncio.Task] = set()  # strong references until each finishes

# A key's ``last_used_at`` is written at most this often: per process by the time noted
# here, across processes by the UPDATE's own condition (sql.key_use_updates).
KEY_USE_EVERY = timedelta(minutes=1)
_key_use_noted: dict[str, datetime] = {}  # key prefix → when this process last stamped it
_key_use_writes: set[asyncio.Future | concurrent.futures.Future] = set()


class IssuanceStore(ABC):
    """Reads and writes of one token request, in the order the flow makes them."""

    @abstractmethod
    async def client_key(self, raw_key: str) -> ClientKey | None:
        """The usable key behind a presented ``eph_…``, with its app and organisation."""

    async def policy(self, organization: Organization) -> IssuancePolicy:
        """The organisation's profiles, quotas and Gemini key: from this process's cache
        (no query), or loaded. Raises ``SecretUnreadable`` for a key no Fernet key opens."""
        return cached_issuance_policy(organization) or await self.load_policy(organization)

    @abstractmethod
    async def load_policy(self, organization: Organization) -> IssuancePolicy: ...

    @abstractmethod
    async def record_refusal(self, grant: TokenGrant) -> bool:
        """Write a refusal's row: a new one, or the PENDING row (``grant.pk`` set) turned
        into it. False if that row was no longer PENDING."""

    async def reserve_and_record(self, approved: Approved, now: datetime) -> PendingGrant:
        """Take the quota and commit the PENDING grant, both or neither; a refusal raises
        ``QuotaDenied`` or ``QuotaBackendUnavailable`` (the row, if written, stays PENDING
        for ``record_refusal``).

        Once started this runs to the end: a caller that goes away meanwhile has its grant
        finished ABANDONED and its quota given back as soon as the grant is written, not
        held until reap_pending gives up on it (twice the upstream timeout later).
        """
        step, withdraw = self._start_reserving(approved, now)
        try:
            return await asyncio.shield(step)
        except asyncio.CancelledError:
            if not withdraw():  # it started: it will commit its grant
                step.add_done_callback(self._abandon_once_written)
            raise

    @abstractmethod
    def _start_reserving(
        self, approved: Approved, now: datetime
    ) -> tuple[asyncio.Future, Callable[[], bool]]:
        """The reserving step, started, and how to withdraw it if it has not begun yet."""

    @abstractmethod
    async def record_issued(self, grant: TokenGrant) -> bool:
        """Write the token's outcome on its PENDING grant; False if it is PENDING no more."""

    @abstractmethod
    async def record_failed(self, pending: PendingGrant) -> bool:
        """Give the reservation back and write the failure on the PENDING grant, together.

        If the quota store is down too, the reservation stays on the grant and its windows
        run out on their own; the grant still records the failure. False if the grant was
        PENDING no more (the reaper recorded it, and refunded it, first)."""

    async def finish_failed(
        self,
        pending: PendingGrant,
        error_code: str,
        detail: str,
        request_body: dict | None = None,
    ) -> None:
        """The attempt ended without a token: recorded (and counted) once, whoever ends it,
        with the body sent to Google if it was sent (Google may have minted from it)."""
        rules.mark_failed(pending.grant, error_code, detail, request_body)
        if await self.record_failed(pending):
            observe.outcome_observed(pending.grant)

    async def finish_abandoned(
        self, pending: PendingGrant, cause: str, request_body: dict | None = None
    ) -> None:
        """The request ended (``cause``: what ended it) before a token was issued."""
        detail = f"The request ended before a token was issued. ({cause})"
        await self.finish_failed(pending, "abandoned", detail, request_body)

    def key_used(self, caller: Caller, at: datetime) -> None:
        """Stamp the caller's key and app as used at ``at``, once the answer is decided.

        At most once a minute per key: on other calls this is a dictionary lookup. The write
        is started and not waited for, so no request's answer waits on it and a failure
        costs only the stamp (it is tried again a minute later).
        """
        prefix = caller.client_key_prefix
        if not prefix or caller.client_app is None:
            return
        last = _key_use_noted.get(prefix)
        if last is not None and last <= at < last + KEY_USE_EVERY:
            return
        _key_use_noted[prefix] = at
        write = self._write_key_use(prefix, caller.client_app.pk, at, at - KEY_USE_EVERY)
        _key_use_writes.add(write)
        write.add_done_callback(_key_use_written)

    @abstractmethod
    def _write_key_use(
        self, prefix: str, app_id: int, at: datetime, cutoff: datetime
    ) -> asyncio.Future | concurrent.futures.Future:
        """Start the two UPDATEs of ``sql.key_use_updates``; the request does not wait."""

    def _abandon_once_written(self, step: asyncio.Future) -> None:
        if step.cancelled() or step.exception() is not None:  # nothing committed, or refused
            return
        finishing = asyncio.ensure_future(self._abandon(step.result()))
        _abandoning.add(finishing)
        finishing.add_done_callback(_abandoning.discard)

    async def _abandon(self, pending: PendingGrant) -> None:
        try:
            await self.finish_abandoned(pending, "CancelledError")
        except Exception:  # the database is down too: reap_pending will record it later
            logger.exception("could not record abandoned grant %s", pending.grant.public_id)


def _key_use_written(write: asyncio.Future | concurrent.futures.Future) -> None:
    _key_use_writes.discard(write)
    if not write.cancelled() and write.exception() is not None:
        logger.warning("could not stamp a key as used: %s", type(write.exception()).__name__)


async def key_use_writes_settled() -> None:
    """Wait for the key-use writes under way (the requests that started them did not)."""
    pending = [
        asyncio.wrap_future(write) if isinstance(write, concurrent.futures.Future) else write
        for write in list(_key_use_writes)
    ]
    await asyncio.gather(*pending, return_exceptions=True)
