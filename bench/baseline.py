"""The baseline: what Google's sample does — a bare async endpoint that mints a token.

No auth, no quota, no audit: one cached google-genai async client calling the same upstream.
Run: GEMINI_BASE_URL=http://127.0.0.1:8765 uvicorn bench.baseline:app
"""

import json
import os
import warnings
from datetime import UTC, datetime, timedelta

from google import genai
from google.genai import types

warnings.simplefilter("ignore")
client = genai.Client(
    api_key="baseline-key",
    http_options=types.HttpOptions(api_version="v1alpha", base_url=os.environ["GEMINI_BASE_URL"]),
)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    now = datetime.now(UTC)
    token = await client.aio.auth_tokens.create(
        config=types.CreateAuthTokenConfig(
            uses=1,
            expire_time=now + timedelta(minutes=30),
            new_session_expire_time=now + timedelta(minutes=1),
            live_connect_constraints=types.LiveConnectConstraints(
                model="gemini-2.0-flash-live-001",
                config=types.LiveConnectConfig(response_modalities=["AUDIO"]),
            ),
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
