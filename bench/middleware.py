"""What the token endpoint's short chain saves by running Django's middleware inline.

Under ASGI, Django's ``MiddlewareMixin`` runs every ``process_request`` and
``process_response`` through ``sync_to_async`` (a thread hop each), although Security,
Common and X-Frame-Options do no I/O. The short path (apps/issuance/asgi.py) runs them inline
(portal/middleware.py, ``Inline*``). This measures, in process on one event loop, the chain
around a view that answers at once, so the difference is the middleware alone:

- ``inline``: the short chain as served;
- ``django``: the same chain with Django's own Security, Common and X-Frame-Options classes.

    .venv/bin/python bench/middleware.py [--requests 3000] [--rounds 7] [--concurrency 1 64]

Reports the median over the rounds of microseconds per request, and the difference.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("LOG_LEVEL", "ERROR")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIRequest  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from apps.issuance.asgi import SHORT_CHAIN  # noqa: E402

DJANGO_OWN = {
    "portal.middleware.InlineSecurityMiddleware": "django.middleware.security.SecurityMiddleware",
    "portal.middleware.InlineCommonMiddleware": "django.middleware.common.CommonMiddleware",
    "portal.middleware.InlineXFrameOptionsMiddleware": (
        "django.middleware.clickjacking.XFrameOptionsMiddleware"
    ),
}


async def _answer(request):
    return JsonResponse({"ok": True}, status=201)


def chain(variant: str):
    handler = convert_exception_to_response(_answer)
    for name in reversed(settings.MIDDLEWARE):
        if name in SHORT_CHAIN:
            used = SHORT_CHAIN[name]
            if variant == "django":
                used = DJANGO_OWN.get(used, used)
            handler = convert_exception_to_response(import_string(used)(handler))
    return handler


def request() -> ASGIRequest:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/tokens",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", b"Bearer eph_x"),
            (b"content-type", b"application/json"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    import io

    return ASGIRequest(scope, io.BytesIO(b"{}"))


async def run(handler, requests: int, concurrency: int) -> float:
    """Microseconds per request with ``concurrency`` requests in flight at once."""
    queue = iter(range(requests))

    async def worker():
        for _ in queue:
            await handler(request())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter() - started) / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    handlers = {variant: chain(variant) for variant in ("inline", "django")}
    print(f"Python {sys.version.split()[0]}, {args.requests} requests × {args.rounds} rounds")
    print("| concurrency | inline µs/request | django µs/request | difference µs |")
    print("|---|---|---|---|")
    for concurrency in args.concurrency:
        for handler in handlers.values():
            await run(handler, 200, concurrency)  # warm
        results = {variant: [] for variant in handlers}
        for _ in range(args.rounds):
            for variant, handler in handlers.items():
                results[variant].append(await run(handler, args.requests, concurrency))
        inline, own = (statistics.median(results[v]) for v in ("inline", "django"))
        print(f"| {concurrency} | {inline:.1f} | {own:.1f} | {own - inline:+.1f} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
