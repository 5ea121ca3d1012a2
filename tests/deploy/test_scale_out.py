"""Exact across processes: quotas, the audit tasks and a crash, with every process real.

Each case runs twice: on Redis's quota engine (production) and on the database's (PostgreSQL
without Redis; the Celery broker is then the filesystem one under the deployment's folder).
"""

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter

import httpx
import pytest
from django.db.models import Q
from django.utils import timezone
from prometheus_client.mmap_dict import MmapedDict

from apps.audit.models import AuditSeal, CleanupRun, TokenGrant
from apps.audit.selectors import audit_chain_verify
from apps.issuance.models import QuotaCounter
from apps.policies import services as policy_services
from apps.policies.models import Quota
from tests.conftest import make_world, well_inside_window
from tests.deploy.conftest import (
    require_nginx,
    require_postgres_and_redis,
    served_redis_url,
)
from tests.deployment import PY, ROOT, Deployment, tcp_sockets_of

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("engine", ["redis", "database"]),
]

Outcome, Lifecycle = TokenGrant.Outcome, TokenGrant.Lifecycle
AUDIT_TASKS = ("audit.reap_pending", "audit.expire_grants", "audit.seal_audit")


@pytest.fixture(autouse=True)
def _needs_the_services():
    require_postgres_and_redis()


def app_quota_per_day(world, limit: int) -> None:
    policy_services.quota_update(
        organization=world.organization,
        quota=world.quota,
        actor=world.owner,
        window=Quota.Window.DAY,
        limit=limit,
    )


def burst(base_url: str, world, count: int, **client_options) -> Counter:
    """``count`` token requests at once, each on its own connection; statuses (or errors)."""

    async def one(client: httpx.AsyncClient):
        try:
            answer = await client.post(
                "/api/v1/tokens",
                json={"profile": world.profile.slug, "end_user": "burst"},
                headers={"Authorization": f"Bearer {world.raw_client_key}"},
            )
            return answer.status_code
        except httpx.TransportError as error:
            return type(error).__name__

    async def run() -> Counter:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=base_url, timeout=60, limits=limits, **client_options
        ) as client:
            return Counter(await asyncio.gather(*(one(client) for _ in range(count))))

    return asyncio.run(run())


def issuances_by_process(deployment: Deployment) -> dict[int, int]:
    """Token requests each web process counted (its own Prometheus file), by pid."""
    counted = {}
    for path in (deployment.folder / "prometheus").glob("counter_*.db"):
        total = 0
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "ephemera_token_issuances_total":
                total += value
        counted[int(path.stem.removeprefix("counter_"))] = int(total)
    return {pid: total for pid, total in counted.items() if total}


def counted_by_engine(deployment: Deployment, organization) -> list[int]:
    """What the deployment's quota engine holds for the organisation, sorted: each window's
    count (the quotas' ``q:`` and the plan's ``plan:`` keys) and its live-token slots."""
    prefixes = (f"q:{organization.pk}:", f"plan:{organization.pk}:")
    if "REDIS_URL" in deployment.portal_env:
        import redis

        client = redis.Redis.from_url(served_redis_url(), decode_responses=True)
        held = [int(client.get(key)) for key in client.scan_iter() if key.startswith(prefixes)]
        held.append(client.zcard(f"active:{organization.pk}"))
        client.close()
        return sorted(held)
    counters = QuotaCounter.objects.filter(
        Q(key__startswith=prefixes[0])
        | Q(key__startswith=prefixes[1])
        | Q(key=f"slots:{organization.pk}")
    )
    return sorted(counters.values_list("count", flat=True))


def send_audit_tasks(
    deployment: Deployment, *, rounds: int, names: tuple[str, ...] = AUDIT_TASKS
) -> None:
    """Queue ``rounds`` runs of each task on the deployment's broker, then wait for them.

    Each task's runs are queued together, so the worker processes (two workers of two) take
    them at the same moment: they race over the same rows."""
    sent_at = timezone.now()
    code = (
        "from portal.celery import app\n"
        f"for name in {names!r}:\n"
        f"    for _ in range({rounds}):\n"
        "        app.send_task(name)"
    )
    subprocess.run(  # noqa: S603
        [PY, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=deployment.portal_env,
        check=True,
        capture_output=True,
    )
    wait_for_task_runs(since=sent_at, names=names, each=rounds)


def test_a_quota_is_exact_over_two_web_processes_behind_the_proxy(deploy, engine):
    require_nginx()
    deployment = deploy(redis=engine == "redis", web_workers=2, celery_workers=0, beat=False)
    world = make_world("Alpha")
    app_quota_per_day(world, 100)
    well_inside_window(86400, room=120)  # the burst within one day's window

    statuses = burst(deployment.public_url, world, 400, verify=deployment.ssl_context())

    assert statuses == {201: 100, 429: 300}
    grants = TokenGrant.objects.filter(organization=world.organization)
    assert grants.count() == 400
    assert Counter(grants.values_list("outcome", flat=True)) == {
        Outcome.ISSUED: 100,
        Outcome.DENIED_QUOTA: 300,
    }
    served = issuances_by_process(deployment)
    assert len(served) == 2, f"one process served the whole burst: {served}"
    assert sum(served.values()) == 400
    # The app's day, the plan's day and the live tokens: each counted exactly 100.
    assert counted_by_engine(deployment, world.organization) == [100, 100, 100]


def test_a_web_process_killed_mid_burst_leaves_pending_rows_that_two_workers_settle_exactly(
    deploy, engine
):
    deployment = deploy(
        redis=engine == "redis",
        web_workers=2,
        celery_workers=2,
        beat=False,
        proxy=False,
        # Mints take 1.5 s, under the 2 s upstream timeout; the reaper's cutoff is then 4 s.
        sandbox_latency_ms=1500,
        env={"GEMINI_TIMEOUT_MS": "2000", "AUDIT_SETTLE_SECONDS": "1"},
    )
    world = make_world("Alpha")
    policy_services.profile_update(
        organization=world.organization,
        profile=world.profile,
        actor=world.owner,
        expire_seconds=3,
        new_session_seconds=2,
    )
    app_quota_per_day(world, 1000)
    well_inside_window(86400, room=300)  # the counts compared at the end: one day's window
    victim = kill_the_busiest_worker_once_requests_wait_on_google(deployment, expected=60)

    # Straight to the web port, from the address the proxy would come from (trusted).
    proxied = {"X-Forwarded-Proto": "https"}
    statuses = burst(deployment.web_url, world, 60, headers=proxied)
    victim.join(timeout=30)
    # The other process (or the one uvicorn starts in the dead one's place) serves on.
    statuses += burst(deployment.web_url, world, 10, headers=proxied)

    issued = statuses[201]
    lost = sum(count for status, count in statuses.items() if status != 201)
    assert issued >= 10 and lost, f"the kill did not land mid-burst: {statuses}"
    grants = TokenGrant.objects.filter(organization=world.organization)
    outcomes = Counter(grants.values_list("outcome", flat=True))
    assert outcomes[Outcome.ISSUED] == issued
    assert set(outcomes) == {Outcome.ISSUED, Outcome.PENDING}  # nothing half-written
    pending = outcomes[Outcome.PENDING]
    assert 0 < pending <= lost
    assert counted_by_engine(deployment, world.organization) == [issued + pending] * 3

    time.sleep(4.5)  # past the reaper's cutoff (twice the upstream timeout)
    send_audit_tasks(deployment, rounds=4)  # each task four times at once, on two workers
    send_audit_tasks(deployment, rounds=1, names=("audit.seal_audit",))  # seal what is left

    outcomes = Counter(grants.values_list("outcome", flat=True))
    assert outcomes == {Outcome.ISSUED: issued, Outcome.ABANDONED: pending}
    assert not grants.filter(lifecycle__in=TokenGrant.LIVE_LIFECYCLES).exists()
    assert grants.filter(lifecycle=Lifecycle.EXPIRED).count() == issued
    # Every abandoned grant gave its reservation back, once: what is held is what was issued.
    assert counted_by_engine(deployment, world.organization) == [issued] * 3
    report = audit_chain_verify(organization=world.organization)
    assert report.ok, report.problem
    assert report.grants == grants.count()
    assert (
        sum(
            AuditSeal.objects.filter(organization=world.organization).values_list(
                "grant_count", flat=True
            )
        )
        == grants.count()
    )


def kill_the_busiest_worker_once_requests_wait_on_google(
    deployment: Deployment, expected: int
) -> threading.Thread:
    """In the background: once all ``expected`` requests wait on the sandbox (each PENDING row
    committed), SIGKILL the web process holding the most of their connections."""

    def connections(pid: int) -> int:
        with tcp_sockets_of(pid) as sockets:
            return sum(
                1
                for s in sockets
                if _peer_port(s) is not None and s.getsockname()[1] == deployment.web_port
            )

    def kill() -> None:
        deadline = time.monotonic() + 20
        requests = f"{deployment.sandbox_url}/_sandbox/requests"
        while len(httpx.get(requests).json()) < expected:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        held = {pid: connections(pid) for pid in deployment.web_worker_pids()}
        os.kill(max(held, key=held.get), signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def _peer_port(sock) -> int | None:
    try:
        return sock.getpeername()[1]
    except OSError:
        return None


def wait_for_task_runs(*, since, names: tuple[str, ...], each: int, deadline: float = 60) -> None:
    """Until every named task has finished ``each`` runs started after ``since``."""
    tasks = [name.removeprefix("audit.") for name in names]
    end = time.monotonic() + deadline
    while True:
        runs = Counter(
            CleanupRun.objects.filter(
                organization=None, task__in=tasks, started_at__gte=since, finished_at__isnull=False
            ).values_list("task", flat=True)
        )
        if all(runs[task] >= each for task in tasks):
            failed = CleanupRun.objects.filter(started_at__gte=since).exclude(error="")
            assert not failed.exists(), list(failed.values_list("task", "error"))
            return
        assert time.monotonic() < end, f"task runs after {deadline} s: {dict(runs)}"
        time.sleep(0.2)
