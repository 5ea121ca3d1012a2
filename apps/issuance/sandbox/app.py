"""A stand-in for Google's token mint: ``POST /v1alpha/auth_tokens`` on the real wire format.

It is the upstream of ``manage.py dev`` and of the test suite, so the real google-genai SDK
is exercised end to end without reaching Google. It checks what Google checks (an API key
header, the token fields, times under 20 hours ahead), records what it received, and can be
told to misbehave: an error status, a garbage or empty body, or a delay. It remembers every
token it mints, so its Live side (``live.py``) can accept exactly those.

Control endpoints (sandbox only): ``GET/DELETE /_sandbox/requests``, ``PUT /_sandbox/faults``,
``GET/DELETE /_sandbox/live`` (the Live sessions and what each applied).
"""

import asyncio
import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apps.issuance.sandbox.live import MintedToken, serve_live, timestamp

MINT_PATH = "/v1alpha/auth_tokens"
TOKENS_REMEMBERED = 100_000  # the oldest are forgotten first, so a load test stays bounded
MAX_AHEAD = timedelta(hours=20)
TOKEN_FIELDS = {
    "uses",
    "expireTime",
    "newSessionExpireTime",
    "bidiGenerateContentSetup",
    "fieldMask",
}


@dataclass
class Faults:
    """How the next mint calls should go wrong (all off by default)."""

    delay_ms: int = 0
    status: int | None = None  # answer with this HTTP status and a Google-style error
    body: str | None = None  # "garbage" (200, not JSON) or "empty" (200, {})
    fail_every: int = 0  # fail every Nth call with ``status`` (default 500); 2 = half of them

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Faults":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SandboxState:
    """Shared by both listeners. ``now`` is the sandbox's clock: tests replace it to move
    time past a token's windows instead of sleeping."""

    api_keys: set[str] | None = None  # None: any non-empty key is accepted
    faults: Faults = field(default_factory=Faults)
    received: deque = field(default_factory=lambda: deque(maxlen=10_000))
    calls: int = 0
    now: Callable[[], datetime] = _utc_now
    tokens: OrderedDict[str, MintedToken] = field(default_factory=OrderedDict)
    live_sessions: deque = field(default_factory=lambda: deque(maxlen=10_000))


def _google_error(status: int, message: str) -> dict[str, Any]:
    names = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }
    return {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}}


def _parse_time(value: Any, now: datetime) -> str | None:
    """A problem with a token time, or None. Naive datetimes are refused, as Google does."""
    try:
        moment = timestamp(value)
    except ValueError:
        return f"invalid timestamp {value!r}"
    if moment.tzinfo is None:
        return f"timestamp {value!r} has no time zone"
    if moment - now >= MAX_AHEAD:
        return f"timestamp {value!r} is 20 hours or more ahead"
    return None


def validate_mint_body(body: dict[str, Any], now: datetime) -> str | None:
    unknown = set(body) - TOKEN_FIELDS
    if unknown:
        return f"Unknown name {sorted(unknown)[0]!r}: Cannot find field."
    uses = body.get("uses", 1)
    if not isinstance(uses, int) or uses < 0:
        return "uses must be a non-negative integer"
    for name in ("expireTime", "newSessionExpireTime"):
        if name in body:
            problem = _parse_time(body[name], now)
            if problem:
                return f"{name}: {problem}"
    setup = body.get("bidiGenerateContentSetup")
    if setup is not None and not str(setup.get("model", "models/")).startswith("models/"):
        return "bidiGenerateContentSetup.model must start with models/"
    return None


class SandboxApp:
    """The ASGI application. One instance holds its state; tests share it in-process."""

    def __init__(self, state: SandboxState | None = None):
        self.state = state or SandboxState()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await serve_live(self.state, scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, payload = await self.route(scope["method"], scope["path"], headers, body)
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        content_type = b"text/html" if isinstance(payload, bytes) else b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(raw)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})

    async def route(self, method: str, path: str, headers: dict[str, str], body: bytes):
        if path == MINT_PATH and method == "POST":
            return await self.mint(headers, body)
        if path == "/_sandbox/requests" and method == "GET":
            return 200, list(self.state.received)
        if path == "/_sandbox/requests" and method == "DELETE":
            self.state.received.clear()
            self.state.calls = 0
            return 200, {}
        if path == "/_sandbox/faults" and method == "PUT":
            self.state.faults = Faults.from_json(json.loads(body or b"{}"))
            self.state.calls = 0
            return 200, asdict(self.state.faults)
        if path == "/_sandbox/live" and method == "GET":
            return 200, list(self.state.live_sessions)
        if path == "/_sandbox/live" and method == "DELETE":
            self.state.live_sessions.clear()
            return 200, {}
        if path == "/_sandbox/health":
            return 200, {"ok": True}
        return 404, _google_error(404, f"No route for {method} {path}")

    async def mint(self, headers: dict[str, str], body: bytes):
        state, faults = self.state, self.state.faults
        now = state.now()
        state.calls += 1
        api_key = headers.get("x-goog-api-key", "")
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = None
        state.received.append(
            {
                "at": time.time(),
                "api_key_last_four": api_key[-4:],
                "content_type": headers.get("content-type"),
                "body": parsed,
            }
        )
        if faults.delay_ms:
            await asyncio.sleep(faults.delay_ms / 1000)
        if not api_key or (state.api_keys is not None and api_key not in state.api_keys):
            return 400, _google_error(400, "API key not valid. Please pass a valid API key.")
        if parsed is None or not isinstance(parsed, dict):
            return 400, _google_error(400, "Invalid JSON payload received.")
        failing = faults.status and (not faults.fail_every or state.calls % faults.fail_every == 0)
        if failing:
            return faults.status, _google_error(faults.status, "Sandbox fault injected.")
        if faults.body == "garbage":
            return 200, b"<html><body>502 Bad Gateway</body></html>"
        if faults.body == "empty":
            return 200, {}
        problem = validate_mint_body(parsed, now)
        if problem:
            return 400, _google_error(400, problem)
        name = f"auth_tokens/sandbox-{secrets.token_urlsafe(24)}"
        state.tokens[name] = MintedToken(body=parsed, minted_at=now)
        if len(state.tokens) > TOKENS_REMEMBERED:
            state.tokens.popitem(last=False)
        return 200, {"name": name}
