"""The store's interface, and what both stores do alike."""

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime

from apps.audit.models import TokenGrant
from apps.clients.models import ClientKey
from apps.issuance import observe, rules
from apps.issuance.policy_cache import IssuancePolicy, cached_issuance_policy
from apps.issuance.rules import Approved, PendingGrant
from apps.tenants.models import Organization

logger = logging.getLogger("apps.issuance.store")

_abandoning: set[asyncio.Task] = set()  # strong references until each finishes


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

    async def finish_failed(self, pending: PendingGrant, error_code: str, detail: str) -> None:
        """The attempt ended without a token: recorded (and counted) once, whoever ends it."""
        rules.mark_failed(pending.grant, error_code, detail)
        if await self.record_failed(pending):
            observe.outcome_observed(pending.grant)

    async def finish_abandoned(self, pending: PendingGrant, cause: str) -> None:
        """The request ended (``cause``: what ended it) before a token was issued."""
        detail = f"The request ended before a token was issued. ({cause})"
        await self.finish_failed(pending, "abandoned", detail)

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
