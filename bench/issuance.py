"""Issuance throughput and latency: the portal against a bare baseline, side by side.

Starts the sandbox upstream, the portal under uvicorn (DEBUG off) and the baseline app
(bench/baseline.py), then drives each from this process with the same load. Reports
throughput and p50/p99 per case and the portal/baseline ratios.

    .venv/bin/python bench/issuance.py                      # SQLite + database quota engine
    .venv/bin/python bench/issuance.py --backend postgres   # PostgreSQL + Redis
    .venv/bin/python bench/issuance.py --grants 1000000     # also: latency with 1M grant rows
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            httpx.get(url, timeout=1)
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


def prepare(args, env: dict[str, str], var_dir: Path) -> dict:
    if args.backend == "postgres":
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-qc",
                f"DROP DATABASE IF EXISTS {args.pg_database}",
                "-c",
                f"CREATE DATABASE {args.pg_database}",
            ],
            check=True,
            capture_output=True,
        )
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
    (var_dir / "static").mkdir(parents=True, exist_ok=True)
    manage(env, "migrate", "-v", "0")
    seeded = json.loads(manage(env, "seed_demo", "--json"))
    manage(env, "shell", "-c", SETUP)
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
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    queue = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

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
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "statuses": statuses,
    }


def measure(target: dict, concurrency: int, total: int) -> dict:
    asyncio.run(drive(target["url"], target["headers"], target["body"], concurrency, 50))  # warm
    return asyncio.run(drive(target["url"], target["headers"], target["body"], concurrency, total))


def _failures(result: dict) -> str:
    """Anything but 201, e.g. ``ReadError×3``; empty when every request succeeded."""
    return ", ".join(f"{k}×{v}" for k, v in result["statuses"].items() if k != 201) or "—"


def run_cases(args, portal: dict, baseline: dict, sandbox_control: str, label: str) -> list[str]:
    rows = []
    for latency in args.latencies:
        httpx.put(f"{sandbox_control}/_sandbox/faults", json={"delay_ms": latency})
        for concurrency in args.concurrency:
            total = max(args.requests, concurrency * 4)
            p = measure(portal, concurrency, total)
            b = measure(baseline, concurrency, total)
            rows.append(
                f"| {label} | {latency} | {concurrency} | {p['rps']:.0f} | {b['rps']:.0f} | "
                f"{p['rps'] / b['rps']:.2f} | {p['p50']:.1f} | {b['p50']:.1f} | "
                f"{p['p99']:.1f} | {b['p99']:.1f} | {_failures(p)} | {_failures(b)} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--latencies", type=int, nargs="+", default=[0, 200])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--grants", type=int, default=0, help="Re-measure with this many rows.")
    parser.add_argument("--pg-database", default="ephemera_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="ephemera-bench-"))
    sandbox_port, portal_port, baseline_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{sandbox_port}"
    env = portal_env(args, var_dir, upstream)
    seeded = prepare(args, env, var_dir)
    processes = [
        start([PY, "manage.py", "sandbox_gemini", "--port", str(sandbox_port)], env),
        start(uvicorn_cmd("portal.asgi:application", portal_port), env),
        start(uvicorn_cmd("bench.baseline:app", baseline_port), {**env, "PYTHONPATH": str(ROOT)}),
    ]
    try:
        for port in (sandbox_port, portal_port, baseline_port):
            wait_for(f"http://127.0.0.1:{port}/")
        portal = {
            "url": f"http://127.0.0.1:{portal_port}/api/v1/tokens",
            "headers": {"Authorization": f"Bearer {seeded['client_key']}"},
            "body": {"profile": seeded["profile"]["slug"], "end_user": "bench"},
        }
        baseline = {"url": f"http://127.0.0.1:{baseline_port}/", "headers": {}, "body": {}}
        print(f"machine: {os.cpu_count()} cores, {sys.version.split()[0]}, backend {args.backend}")
        print(
            "| case | upstream ms | concurrency | portal rps | baseline rps | ratio | "
            "portal p50 | baseline p50 | portal p99 | baseline p99 | portal errors | "
            "baseline errors |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        run_cases(args, portal, baseline, upstream, "empty")
        if args.grants:
            manage(env, "shell", "-c", SEED_GRANTS.format(count=args.grants))
            print(f"... seeded {args.grants} grant rows")
            args.latencies, args.concurrency = [0], [1, 64]
            run_cases(args, portal, baseline, upstream, f"{args.grants} rows")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
