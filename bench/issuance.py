"""Issuance throughput and latency: the portal against a bare baseline, side by side, served
as one process and as deployed.

Starts the sandbox upstream, the portal (DEBUG off) and the baseline app (bench/baseline.py:
the same token, the same SDK and pool limits, nothing else), then loads each side with wrk from
a separate process, alternating the sides run by run, clients on kept-alive connections.
Reports, per case and side, the median over the repeats of throughput and p50/p99, and each
side's ratio to, and latency added over, the baseline served the same way.

Ways of serving (``--serve``; the first two by default):

- ``process``: one uvicorn process each, straight to its port (the figure earlier notes quote);
- ``deployed``: as deploy/ serves it (tests/deployment.py): nginx with deploy/nginx.conf over
  TLS in front of ``docker-compose.yml``'s web command with ``--web-workers`` uvicorn workers,
  and the baseline with as many workers behind the same proxy configuration;
- ``workers`` (on request): those same workers, straight to uvicorn, without the proxy.

    .venv/bin/python bench/issuance.py                      # SQLite + database quota engine
    .venv/bin/python bench/issuance.py --backend postgres   # PostgreSQL + Redis
    .venv/bin/python bench/issuance.py --backend postgres --serve deployed --web-workers 1 2 \
        --latencies 200 --concurrency 256                   # scale-out: 1 and 2 web processes
    .venv/bin/python bench/issuance.py --grants 1000000     # also: latency with 1M grant rows
    .venv/bin/python bench/issuance.py --compare-django     # also: Django's whole request cycle
    .venv/bin/python bench/issuance.py --compare-transport  # also: baseline on our transport

The baseline runs on the SDK's stock HTTP transport, as Google's sample does;
``--compare-transport`` adds a baseline (one process) on the gateway's own transport
(apps/issuance/transport.py), to show what the portal costs apart from that transport's saving.
``--compare-django`` adds the portal (one process) served by Django's own ASGI handler, without
the token endpoint's short path (apps/issuance/asgi.py), to show what that path saves.

The load generator is wrk (``apt-get install wrk`` / ``brew install wrk``): a C event loop
that needs a fraction of a core at these rates. Without it the bench falls back to an
in-process httpx driver, which saturates its own core well before the servers do at 64+
concurrent clients, so its high-concurrency numbers measure the driver, not the servers.
The ``deployed`` sides need nginx (``apt-get install nginx``).
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the deployment harness lives with the tests

from tests.deployment import Deployment, nginx_command  # noqa: E402

PY = sys.executable
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
WRK_MISSING = (
    "wrk not found: install it for honest numbers (Debian/Ubuntu: apt-get install -y wrk; "
    "macOS: brew install wrk). Falling back to the in-process httpx driver, which itself "
    "saturates at high concurrency."
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, deadline: float = 30, method: str = "GET") -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            httpx.request(method, url, timeout=5, verify=False)  # noqa: S501 (a per-run CA)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def portal_env(args, var_dir: Path, upstream: str) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "EPHEMERA_VAR_DIR": str(var_dir),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "AUDIT_HMAC_KEY": secrets.token_hex(32),
        "GEMINI_BASE_URL": upstream,
        "GEMINI_API_KEY": "bench-key",
        "LOG_LEVEL": "ERROR",
        "PYTHONWARNINGS": "ignore",
        # A server that dies under load leaves every thread's Python traceback on stderr.
        "PYTHONFAULTHANDLER": "1",
    }
    if args.backend == "postgres":
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{args.pg_database}"
        env["REDIS_URL"] = args.redis_url
    return env


def manage(env: dict[str, str], *command: str) -> str:
    result = subprocess.run(
        [PY, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout


SETUP = """
from apps.tenants.models import Organization
org = Organization.objects.get(slug="demo")
org.max_active_tokens = org.max_tokens_per_day = 10**9
org.save()
"""

PROFILE_TERMS = """
import json
from apps.policies.models import LiveConstraintProfile
profile = LiveConstraintProfile.objects.get(organization__slug="demo", slug="demo-voice")
print(json.dumps({"model": profile.model, "config": profile.config,
    "lock_additional_fields": profile.sdk_lock_additional_fields, "uses": profile.uses,
    "expire_seconds": profile.expire_seconds, "new_session_seconds": profile.new_session_seconds}))
"""

SEED_GRANTS = """
import uuid
from django.utils import timezone
from apps.audit.models import TokenGrant
from apps.tenants.models import Organization
org = Organization.objects.get(slug="demo")
now = timezone.now()
batch = []
for i in range({count}):
    batch.append(TokenGrant(organization=org, public_id=uuid.uuid4(), profile_slug="demo-voice",
        outcome="issued", lifecycle="expired", requested_at=now, end_user=f"user-{{i % 5000}}"))
    if len(batch) == 20000:
        TokenGrant.objects.bulk_create(batch); batch = []
TokenGrant.objects.bulk_create(batch)
"""


def psql(database: str, *commands: str) -> None:
    """Run SQL commands on the local PostgreSQL server, one after another."""
    options = [option for command in commands for option in ("-c", command)]
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", *options, database],
        check=True,
        capture_output=True,
    )


def prepare(args, env: dict[str, str], var_dir: Path) -> dict:
    if args.backend == "postgres":
        psql(
            "postgres",
            f"DROP DATABASE IF EXISTS {args.pg_database}",
            f"CREATE DATABASE {args.pg_database}",
        )
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
    (var_dir / "static").mkdir(parents=True, exist_ok=True)
    manage(env, "migrate", "-v", "0")
    seeded = json.loads(manage(env, "seed_demo", "--json"))
    manage(env, "shell", "-c", SETUP)
    printed = manage(env, "shell", "-c", PROFILE_TERMS).splitlines()
    seeded["baseline_profile"] = next(line for line in reversed(printed) if line.startswith("{"))
    return seeded


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr
    )


def uvicorn_cmd(app: str, port: int) -> list[str]:
    return [
        PY,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


async def drive(url: str, headers: dict, body: dict, concurrency: int, total: int) -> dict:
    """The fallback driver: httpx in this process (see the module docstring)."""
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    queue = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # The deployed sides' certificates are made per run (tests/deployment.py): no CA to trust.
    async with httpx.AsyncClient(timeout=60, limits=limits, verify=False) as client:  # noqa: S501

        async def worker():
            for _ in queue:
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=body, headers=headers)
                    outcome = response.status_code
                except httpx.TransportError as error:  # counted, not fatal: it is a finding
                    outcome = type(error).__name__
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[outcome] = statuses.get(outcome, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": total / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "statuses": statuses,
    }


def drive_wrk(target: dict, concurrency: int, seconds: float) -> dict:
    env = {
        **os.environ,
        "BODY": json.dumps(target.body),
        "AUTH": target.headers.get("Authorization", ""),
    }
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--timeout",
        "60s",
        "-s",
        str(WRK_SCRIPT),
        target.url,
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    statuses: dict[int | str, int] = {int(k): v for k, v in result["statuses"].items()}
    for error in ("connect", "read", "write", "timeout"):
        if result[error]:
            statuses[error] = result[error]
    return {
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "p50": result["p50_us"] / 1000,
        "p99": result["p99_us"] / 1000,
        "statuses": statuses,
    }


def measure(args, target: "Side", concurrency: int) -> dict:
    """One run against ``target``; with ``--cpu``, also the CPU each part of the machine
    spent per token (ms) while it ran."""
    groups = cpu_groups(args, target) if args.cpu else {}
    before = {name: sum(map(_cpu_ticks, pids)) for name, pids in groups.items()}
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    if args.driver == "wrk":
        result = drive_wrk(target, concurrency, args.duration)
    else:
        total = max(args.requests, concurrency * 4)
        result = asyncio.run(drive(target.url, target.headers, target.body, concurrency, total))
    if groups:
        tokens = result["rps"] * (time.monotonic() - began)
        tick = os.sysconf("SC_CLK_TCK")
        spent = {
            name: (sum(map(_cpu_ticks, pids)) - before[name]) / tick
            for name, pids in groups.items()
        }
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent["load generator"] = (children.ru_utime + children.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        result["cpu_ms"] = {name: 1000 * seconds / tokens for name, seconds in spent.items()}
    return result


def cpu_groups(args, side: "Side") -> dict[str, list[int]]:
    """The processes whose CPU a run of ``side`` is charged: its own server (and proxy),
    the shared sandbox, and the machine's PostgreSQL and Redis."""
    return {
        "server": all_pids(side.server_processes),
        "proxy": all_pids(side.proxy_processes),
        "sandbox (Google)": all_pids(args.processes[:1]),
        "postgres": _pids_named("postgres"),
        "redis": _pids_named("redis-server"),
    }


def _pids_named(name: str) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if stat.read_text().strip() == name:
                pids.append(int(stat.parent.name))
    return pids


def warm(args, target: dict, concurrency: int) -> None:
    if args.driver == "wrk":
        drive_wrk(target, concurrency, 2)
    else:
        asyncio.run(drive(target.url, target.headers, target.body, concurrency, 50))


def vacuum(args) -> None:
    """On PostgreSQL, what autovacuum would have done by now: reclaim dead rows, refresh stats.

    Every issuance inserts a grant and updates it, leaving a dead row version. A normally
    configured server vacuums and analyzes such a table on its own; this machine's server runs
    with ``autovacuum = off``, and there the portal slows down run after run as dead rows and
    stale statistics pile up (p50 at 1 client 6 → 12 ms over 3,000 issuances, measured), which
    is the server's configuration, not the portal. Run between runs, outside the timings.
    """
    if args.backend == "postgres":
        psql(args.pg_database, "VACUUM ANALYZE")


def settle(pids: list[int], deadline: float = 60) -> None:
    """Wait until the servers are idle: a collapsed server still works through its backlog
    after the driver stops, and that work must not land in the next (other side's) run."""
    ticks = [0] * len(pids)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        now = [_cpu_ticks(pid) for pid in pids]
        if sum(now) - sum(ticks) < 3:  # under ~30 ms of CPU in the last 0.3 s
            return
        ticks = now
        time.sleep(0.3)


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # not Linux, or gone: do not wait
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _failures(result: dict) -> str:
    """Anything but 201, e.g. ``read×3``; empty when every request succeeded."""
    return ", ".join(f"{k}×{v}" for k, v in result["statuses"].items() if k != 201) or "—"


def _median(results: list[dict], name: str) -> float:
    return statistics.median(result[name] for result in results)


@dataclass
class Side:
    """One thing under load: where it is, what to send, and which side it is compared with."""

    name: str
    url: str
    headers: dict = field(default_factory=dict)
    body: dict = field(default_factory=dict)
    baseline: str | None = None  # the side this one's ratio and added latency are taken to
    also_compared_to: str | None = None  # a second baseline, on a row of its own
    web_workers: int = 0  # the portal's uvicorn workers behind nginx (deployed sides only)
    server_processes: list = field(default_factory=list)  # for --cpu: what serves this side
    proxy_processes: list = field(default_factory=list)


HEADER = (
    "| case | upstream ms | clients | side | rps | p50 ms | p99 ms "
    "| ratio to baseline | added p50 | added p99 | errors |\n|" + "---|" * 11
)


def run_cases(args, sides: dict[str, Side], sandboxes: list[str], label: str) -> list[dict]:
    """Each case: warm every side, then alternate their runs; print and return the medians."""
    results = []
    for latency in args.latencies:
        for sandbox in sandboxes:
            httpx.put(f"{sandbox}/_sandbox/faults", json={"delay_ms": latency})
        for concurrency in args.concurrency:
            runs: dict[str, list[dict]] = {name: [] for name in sides}
            for side in sides.values():
                warm(args, side, concurrency)
                settle(all_pids(args.processes))
                vacuum(args)
            for _ in range(args.repeats):
                for name, side in sides.items():
                    runs[name].append(measure(args, side, concurrency))
                    settle(all_pids(args.processes))
                    vacuum(args)
            medians = {
                name: {stat: _median(runs[name], stat) for stat in ("rps", "p50", "p99")}
                for name in sides
            }
            for name, side in sides.items():
                m = medians[name]
                if side.baseline:
                    b = medians[side.baseline]
                    compared = (
                        f"{m['rps'] / b['rps']:.2f} | {m['p50'] - b['p50']:+.1f} | "
                        f"{m['p99'] - b['p99']:+.1f}"
                    )
                else:
                    compared = "— | — | —"
                failures = (
                    "; ".join(_failures(run) for run in runs[name] if _failures(run) != "—") or "—"
                )
                print(
                    f"| {label} | {latency} | {concurrency} | {name} | {m['rps']:.0f} | "
                    f"{m['p50']:.1f} | {m['p99']:.1f} | {compared} | {failures} |",
                    flush=True,
                )
                if side.also_compared_to:
                    b = medians[side.also_compared_to]
                    print(
                        f"| {label} | {latency} | {concurrency} | {name} "
                        f"(to {side.also_compared_to}) | | | | {m['rps'] / b['rps']:.2f} | "
                        f"{m['p50'] - b['p50']:+.1f} | {m['p99'] - b['p99']:+.1f} | |",
                        flush=True,
                    )
                results.append(
                    {"label": label, "latency": latency, "concurrency": concurrency,
                     "side": name, **m}
                )  # fmt: skip
            scale_out(sides, medians, latency, concurrency)
            if args.cpu:
                cpu_per_token(runs, label, latency, concurrency)
    return results


def cpu_per_token(runs: dict[str, list[dict]], label: str, latency: int, concurrency: int):
    """Where the machine's CPU went per token, per side (medians over the runs, ms)."""
    parts = list(next(iter(runs.values()))[0]["cpu_ms"])
    print(f"CPU ms per token at {label}, {latency} ms × {concurrency} clients:")
    print(f"| side | {' | '.join(parts)} | total |\n|{'---|' * (len(parts) + 2)}")
    for name, results in runs.items():
        spent = {part: statistics.median(r["cpu_ms"][part] for r in results) for part in parts}
        cells = " | ".join(f"{spent[part]:.2f}" for part in parts)
        print(f"| {name} | {cells} | {sum(spent.values()):.2f} |", flush=True)


def scale_out(sides: dict[str, Side], medians: dict, latency: int, concurrency: int) -> None:
    """The deployed portal's throughput with more web processes, against the fewest."""
    deployed = sorted((side.web_workers, name) for name, side in sides.items() if side.web_workers)
    if len(deployed) < 2:
        return
    (fewest, first), *more = deployed
    for workers, name in more:
        print(
            f"scale-out at {latency} ms × {concurrency} clients: portal with {workers} web "
            f"processes / {fewest}: {medians[name]['rps'] / medians[first]['rps']:.2f}",
            flush=True,
        )


def same_upstream_body(portal: Side, baseline: Side, sandbox: str) -> bool:
    """Whether the portal and the baseline send Google the same token request (times aside)."""
    bodies = []
    for side in (portal, baseline):
        httpx.delete(f"{sandbox}/_sandbox/requests")
        httpx.post(side.url, json=side.body, headers=side.headers, timeout=30, verify=False)  # noqa: S501
        (received,) = httpx.get(f"{sandbox}/_sandbox/requests").json()
        body = received["body"]
        for name in ("expireTime", "newSessionExpireTime"):
            body.pop(name, None)
        bodies.append(body)
    return bodies[0] == bodies[1]


def all_pids(processes: list) -> list[int]:
    """The started processes and everything they started (uvicorn's and nginx's workers)."""
    pids, queue = [], [getattr(process, "pid", process) for process in processes]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                queue += [int(child) for child in (task / "children").read_text().split()]
    return pids


def start_served_with_workers(
    args, env, seeded, var_dir: Path, upstream: str, workers: int
) -> dict[str, Side]:
    """The portal and the baseline with ``workers`` uvicorn workers each (the compose web
    command for the portal): behind nginx (``deployed``) and straight to uvicorn
    (``workers``), as ``--serve`` asks. Returns those sides."""
    folder = var_dir / f"served-{workers}"
    portal = Deployment(
        {key: value for key, value in env.items() if key != "GEMINI_BASE_URL"},
        folder / "portal",
        web_workers=workers,
        celery_workers=0,
        beat=False,
        proxy="deployed" in args.serve,
        upstream_url=upstream,
        static_cache=var_dir / "static-cache",
    )
    args.deployments.append(portal)
    portal.start()
    args.processes += list(portal.processes.values())

    baseline_port = free_port()
    baseline_env = {**env, "PYTHONPATH": str(ROOT), "BASELINE_PROFILE": seeded["baseline_profile"]}
    command = [*uvicorn_cmd("bench.baseline:app", baseline_port), "--workers", str(workers)]
    baseline = start(command, baseline_env)
    args.processes.append(baseline)
    wait_for(f"http://127.0.0.1:{baseline_port}/", method="POST")

    processes = f"{workers} worker{'s' if workers > 1 else ''}"
    token_request = {
        "headers": {"Authorization": f"Bearer {seeded['client_key']}"},
        "body": {"profile": seeded["profile"]["slug"], "end_user": "bench"},
    }
    sides = {}
    if "workers" in args.serve:
        sides[f"portal {processes}"] = Side(
            f"portal {processes}",
            f"{portal.web_url}/api/v1/tokens",
            **token_request,
            baseline=f"baseline {processes}",
            server_processes=[portal.processes["web"]],
        )
        sides[f"baseline {processes}"] = Side(
            f"baseline {processes}",
            f"http://127.0.0.1:{baseline_port}/",
            server_processes=[baseline],
        )
    if "deployed" in args.serve:
        https_port = free_port()
        proxy = nginx_command(
            folder / "baseline-proxy",
            upstream=f"127.0.0.1:{baseline_port}",
            http_port=free_port(),
            https_port=https_port,
            static_root=folder,
        )
        baseline_proxy = start(proxy, env)
        args.processes.append(baseline_proxy)
        wait_for(f"https://localhost:{https_port}/api/", method="POST")
        sides[f"portal nginx + {processes}"] = Side(
            f"portal nginx + {processes}",
            f"{portal.public_url}/api/v1/tokens",
            **token_request,
            baseline=f"baseline nginx + {processes}",
            web_workers=workers,
            server_processes=[portal.processes["web"]],
            proxy_processes=[portal.processes["nginx"]],
        )
        sides[f"baseline nginx + {processes}"] = Side(
            f"baseline nginx + {processes}",
            f"https://localhost:{https_port}/api/",
            server_processes=[baseline],
            proxy_processes=[baseline_proxy],
        )
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--latencies", type=int, nargs="+", default=[0, 200])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument(
        "--serve",
        choices=["process", "workers", "deployed"],
        nargs="+",
        default=["process", "deployed"],
        help="process: one uvicorn process each; workers: --web-workers uvicorn workers each; "
        "deployed: those workers behind nginx (deploy/nginx.conf)",
    )
    parser.add_argument(
        "--web-workers", type=int, nargs="+", default=[2], help="For --serve workers/deployed."
    )
    parser.add_argument("--driver", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--duration", type=int, default=8, help="Seconds per wrk run.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per side and case.")
    parser.add_argument("--requests", type=int, default=1000, help="Per httpx-driver run.")
    parser.add_argument("--grants", type=int, default=0, help="Re-measure with this many rows.")
    parser.add_argument("--pg-database", default="ephemera_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="Also report the CPU each part of the machine spent per token, per side.",
    )
    parser.add_argument(
        "--compare-django",
        action="store_true",
        help="Also run the portal through Django's whole request cycle (no short path).",
    )
    parser.add_argument(
        "--compare-transport",
        action="store_true",
        help="Also run a baseline on the gateway's HTTP transport, not the SDK's stock one.",
    )
    args = parser.parse_args()
    if args.driver in ("auto", "wrk") and not shutil.which("wrk"):
        if args.driver == "wrk":
            parser.error(WRK_MISSING.split(". Falling")[0] + ".")
        print(WRK_MISSING, file=sys.stderr)
        args.driver = "httpx"
    elif args.driver == "auto":
        args.driver = "wrk"

    var_dir = Path(tempfile.mkdtemp(prefix="ephemera-bench-"))
    sandbox_port = free_port()
    upstream = f"http://127.0.0.1:{sandbox_port}"
    env = portal_env(args, var_dir, upstream)
    seeded = prepare(args, env, var_dir)
    baseline_env = {**env, "PYTHONPATH": str(ROOT), "BASELINE_PROFILE": seeded["baseline_profile"]}
    args.processes = [start([PY, "manage.py", "sandbox_gemini", "--port", str(sandbox_port)], env)]
    args.deployments = []
    token_request = {
        "headers": {"Authorization": f"Bearer {seeded['client_key']}"},
        "body": {"profile": seeded["profile"]["slug"], "end_user": "bench"},
    }
    try:
        wait_for(f"{upstream}/_sandbox/health")
        sides: dict[str, Side] = {}
        if "process" in args.serve:
            sides.update(start_one_process_sides(args, env, baseline_env, token_request))
        if {"workers", "deployed"} & set(args.serve):
            for workers in args.web_workers:
                sides.update(
                    start_served_with_workers(args, env, seeded, var_dir, upstream, workers)
                )
        print(
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"backend {args.backend}, driver {args.driver}, {args.repeats} runs per side "
            f"and case ({args.duration} s each with wrk), medians, kept-alive connections"
        )
        portal, baseline = next(
            (side, sides[side.baseline]) for side in sides.values() if side.baseline
        )
        print(f"same upstream request body: {same_upstream_body(portal, baseline, upstream)}")
        print(HEADER)
        run_cases(args, sides, [upstream], "empty")
        if args.grants:
            args.latencies, args.concurrency = [0], [1, 64]
            before = run_cases(args, sides, [upstream], "before seeding")
            manage(env, "shell", "-c", SEED_GRANTS.format(count=args.grants))
            print(f"... seeded {args.grants} grant rows")
            after = run_cases(args, sides, [upstream], f"{args.grants} rows")
            for row_before, row_after in zip(before, after, strict=True):
                if not row_after["side"].startswith("portal"):
                    continue
                print(
                    f"{row_after['side']} p50 with {args.grants} rows vs before, concurrency "
                    f"{row_after['concurrency']}: {row_after['p50'] / row_before['p50'] - 1:+.0%}"
                )
    finally:
        for deployment in args.deployments:
            deployment.stop()
        for process in reversed(args.processes):  # the sandbox last: nothing left mid-call
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        shutil.rmtree(var_dir, ignore_errors=True)


def start_one_process_sides(args, env, baseline_env, token_request) -> dict[str, Side]:
    """The portal and the baseline as one uvicorn process each (and the optional extras)."""
    portal_port, baseline_port, django_port, same_port = (free_port() for _ in range(4))
    started = {
        portal_port: start(uvicorn_cmd("portal.asgi:application", portal_port), env),
        baseline_port: start(uvicorn_cmd("bench.baseline:app", baseline_port), baseline_env),
    }
    sides = {
        "portal 1 process": Side(
            "portal 1 process",
            f"http://127.0.0.1:{portal_port}/api/v1/tokens",
            **token_request,
            baseline="baseline 1 process",
            server_processes=[started[portal_port]],
        ),
        "baseline 1 process": Side(
            "baseline 1 process",
            f"http://127.0.0.1:{baseline_port}/",
            server_processes=[started[baseline_port]],
        ),
    }
    if args.compare_django:
        factory = "django.core.asgi:get_asgi_application"
        started[django_port] = start([*uvicorn_cmd(factory, django_port), "--factory"], env)
        sides["django-stack 1 process"] = Side(
            "django-stack 1 process",
            f"http://127.0.0.1:{django_port}/api/v1/tokens",
            **token_request,
            baseline="baseline 1 process",
            server_processes=[started[django_port]],
        )
    if args.compare_transport:
        same_env = {**baseline_env, "BASELINE_TRANSPORT": "gateway"}
        started[same_port] = start(uvicorn_cmd("bench.baseline:app", same_port), same_env)
        sides["same-transport baseline 1 process"] = Side(
            "same-transport baseline 1 process",
            f"http://127.0.0.1:{same_port}/",
            server_processes=[started[same_port]],
        )
        sides["portal 1 process"].also_compared_to = "same-transport baseline 1 process"
    args.processes += list(started.values())
    for port in started:
        wait_for(f"http://127.0.0.1:{port}/")
    return sides


if __name__ == "__main__":
    main()
