"""The baseline: what Google's sample does — a bare async endpoint that mints a token.

No auth, no quota, no audit: one cached google-genai async client calling the same upstream.
For a fair comparison it mints the same token the portal does (the profile's model, config,
lock and terms, passed by bench/issuance.py in ``BASELINE_PROFILE``) over the same transport
(httpx2 with the gateway's pool limits and timeout), building the SDK config per request as
the portal does. Its HTTP transport is the SDK's stock one unless ``BASELINE_TRANSPORT=gateway``
gives it the gateway's too (apps/issuance/transport.py, whose cheaper pool check is the
portal's own work, so the stock transport is the default comparison).

Run: GEMINI_BASE_URL=http://127.0.0.1:8765 uvicorn bench.baseline:app
"""

import json
import os
import warnings
from datetime import UTC, datetime, timedelta

import httpx2
from google import genai
from google.genai import types

from apps.issuance.gateway import API_VERSION, UPSTREAM_LIMITS
from apps.issuance.transport import UpstreamTransport

warnings.simplefilter("ignore")
PROFILE = json.loads(
    os.environ.get("BASELINE_PROFILE")
    or json.dumps(
        {
            "model": "gemini-2.0-flash-live-001",
            "config": {"response_modalities": ["AUDIO"]},
            "lock_additional_fields": None,
            "uses": 1,
            "expire_seconds": 1800,
            "new_session_seconds": 60,
        }
    )
)
TIMEOUT_MS = int(os.environ.get("GEMINI_TIMEOUT_MS") or 10_000)
TRANSPORT = (
    UpstreamTransport(UPSTREAM_LIMITS)
    if os.environ.get("BASELINE_TRANSPORT") == "gateway"
    else httpx2.AsyncHTTPTransport(limits=UPSTREAM_LIMITS)
)
client = genai.Client(
    api_key="baseline-key",
    http_options=types.HttpOptions(
        api_version=API_VERSION,
        base_url=os.environ["GEMINI_BASE_URL"],
        timeout=TIMEOUT_MS,
        httpx_async_client=httpx2.AsyncClient(
            timeout=httpx2.Timeout(TIMEOUT_MS / 1000), transport=TRANSPORT
        ),
    ),
)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    now = datetime.now(UTC)
    token = await client.aio.auth_tokens.create(
        config=types.CreateAuthTokenConfig(
            uses=PROFILE["uses"],
            expire_time=now + timedelta(seconds=PROFILE["expire_seconds"]),
            new_session_expire_time=now + timedelta(seconds=PROFILE["new_session_seconds"]),
            live_connect_constraints=types.LiveConnectConstraints(
                model=PROFILE["model"],
                config=types.LiveConnectConfig.model_validate(PROFILE["config"]),
            ),
            lock_additional_fields=PROFILE["lock_additional_fields"],
        )
    )
    body = json.dumps({"token": token.name}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
