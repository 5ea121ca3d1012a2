"""Copy-paste client guides for one Live constraint profile (issue 6, item 5).

The flow a guide teaches: the tenant's backend, holding a client key in the environment,
asks Ephemera's ``POST /api/v1/tokens`` for a token (with ``curl``, or the project's client
library ``ephemera_client``); the browser (or any other client) uses the token's name as its
Gemini API key, on ``v1alpha``, for the Live API only
(``docs/reference/gemini-ephemeral-tokens.md``).

Every snippet fails visibly: Ephemera's error (status, ``error.code``, message) and a Live
session Google refuses (a spent or expired token closes the socket with 1008 and a reason)
are printed, and the program stops, rather than carrying on with an undefined token or
waiting forever.

Snippets are built from the profile and the portal's own address, never from a key: the
client key is a placeholder (``$EPHEMERA_CLIENT_KEY``), and the text is plain — the page
escapes it. Every value a tenant controls goes in through a quoting function of the target
language (``shlex.quote`` for the shell, ``json.dumps`` for Python and JavaScript), so no
profile can break a snippet.
"""

import json
import re
import shlex
import textwrap
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from django.urls import reverse
from google.genai import types

from apps.policies.live_schema import LOCK_WHOLE_SETUP
from apps.policies.models import LiveConstraintProfile
from apps.policies.selectors import ProfileLock, profile_lock

CLIENT_KEY_ENV = "EPHEMERA_CLIENT_KEY"
EXAMPLE_END_USER = "user-123"
# How the guide tells a tenant to install ephemera_client (clients/python/README.md).
CLIENT_LIBRARY_INSTALL = "pip install ./clients/python"
JS_MODALITIES = frozenset({"AUDIO", "TEXT", "IMAGE"})  # members of the JS SDK's Modality
_JS_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


@dataclass(frozen=True)
class Snippet:
    key: str  # stable id: the page's element ids, and tests
    title: str
    language: str  # "shell", "python" or "javascript"
    code: str
    note: str = ""


@dataclass(frozen=True)
class ProfileGuide:
    profile: LiveConstraintProfile
    portal_url: str
    tokens_url: str
    lock: ProfileLock  # what the API's `lock` and `locked_fields` say
    snippets: list[Snippet]


def profile_guide(*, profile: LiveConstraintProfile, portal_url: str) -> ProfileGuide:
    """The guide for one profile; ``portal_url`` is where the tenant reaches Ephemera."""
    tokens_url = urljoin(portal_url, reverse("api:tokens_create"))
    binding = profile_lock(profile=profile)
    lock = _lock_comment(list(binding.locked_fields), binding.lock == LOCK_WHOLE_SETUP)
    snippets = [
        Snippet(
            key="curl",
            title="Your backend asks for a token: curl",
            language="shell",
            code=curl_snippet(tokens_url=tokens_url, slug=profile.slug),
            note=(
                f"Answers 201 with the token. Put the client key in {CLIENT_KEY_ENV} on your "
                "server; it must never reach a browser. With --fail-with-body a refusal prints "
                "Ephemera's error body and exits 22 after curl names the status."
            ),
        ),
        Snippet(
            key="python-backend",
            title="Your backend asks for a token: Python (ephemera_client)",
            language="python",
            code=python_backend_snippet(portal_url=portal_url, slug=profile.slug),
            note=(
                f"Install the client library with {CLIENT_LIBRARY_INSTALL} from a checkout of "
                "Ephemera's repository. Call it from your own endpoint once you know who your "
                "user is, and hand the answer (at least token and model) to the browser."
            ),
        ),
        Snippet(
            key="js-browser",
            title="The browser opens a Live session: JavaScript (@google/genai)",
            language="javascript",
            code=js_browser_snippet(model=profile.model, config=profile.config, lock=lock),
            note=(
                "The token's name is the API key, and it works only on v1alpha. A spent or "
                "expired token is refused: the snippet prints the close code and reason."
            ),
        ),
        Snippet(
            key="python-client",
            title="A Python client opens a Live session (google-genai)",
            language="python",
            code=python_client_snippet(model=profile.model, config=profile.config, lock=lock),
            note=(
                "For a desktop or device client; the same token your backend handed over. "
                "A refused session prints its close code and reason and exits with status 1."
            ),
        ),
    ]
    return ProfileGuide(
        profile=profile,
        portal_url=portal_url,
        tokens_url=tokens_url,
        lock=binding,
        snippets=snippets,
    )


# --- the tenant's backend ------------------------------------------------------------------


def _request_body(slug: str) -> dict[str, str]:
    return {"profile": slug, "end_user": EXAMPLE_END_USER}


def curl_snippet(*, tokens_url: str, slug: str) -> str:
    body = json.dumps(_request_body(slug))
    return (
        f"curl -sS --fail-with-body -X POST {shlex.quote(tokens_url)} \\\n"
        f'  -H "Authorization: Bearer ${CLIENT_KEY_ENV}" \\\n'
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(body)}\n"
    )


def python_backend_snippet(*, portal_url: str, slug: str) -> str:
    return f'''\
import os
import sys

from ephemera_client import EphemeraClient, EphemeraError, QuotaExceeded

# One client for your server process. The key comes from the environment, never from code,
# and never reaches a browser.
ephemera = EphemeraClient({json.dumps(portal_url)}, os.environ["{CLIENT_KEY_ENV}"])
PROFILE = {json.dumps(slug)}


def gemini_live_token(end_user: str):
    """A Gemini Live token for one session of one of your signed-in users.

    Hand the browser at least .token and .model (.lock, .locked_fields and .config say what
    the token fixes). Raises QuotaExceeded (try again after .retry_after seconds) or another
    EphemeraError (.code, .status, .message).
    """
    return ephemera.token(PROFILE, end_user)


if __name__ == "__main__":
    try:
        issued = gemini_live_token({json.dumps(EXAMPLE_END_USER)})
    except QuotaExceeded as error:  # a 429: a quota or plan limit is used up for now
        sys.exit(f"No token, retry in {{error.retry_after}} s: {{error}}")
    except EphemeraError as error:  # "[code status] message (request id …)"
        sys.exit(f"No token: {{error}}")
    print(issued.token, "until", issued.expire_time.isoformat())
    # lock: "whole_setup" (the token's setup replaces the client's) or "fields" (locked_fields)
    print("lock:", issued.lock, ", ".join(issued.locked_fields))
'''


# --- the client: the browser, or a Python program --------------------------------------------


def _lock_comment(locked_fields: list[str], whole_setup_locked: bool) -> list[str]:
    """What the token locks, as comment lines for the client snippets."""
    if whole_setup_locked:
        return [
            "The token locks the whole setup: its model and config replace whatever you send",
            "here, so send the same values (or leave the config out).",
        ]
    if locked_fields:
        text = "The token locks " + ", ".join(locked_fields) + ": its values win, so send "
        return textwrap.wrap(text + "the same ones. You may add fields it does not lock.", 88)
    return ["The token locks nothing: the config is yours to choose."]


def _sdk_config(config: dict[str, Any], *, camel_case: bool) -> dict[str, Any]:
    """The profile's config as the SDK spells it: snake_case for Python, camelCase for JS.

    Keys are renamed by the SDK's own model, so free-form maps (a function's parameter
    names, JSON schemas) keep their keys exactly.
    """
    parsed = types.LiveConnectConfig.model_validate(config or {})
    return parsed.model_dump(mode="json", by_alias=camel_case, exclude_none=True)


def js_literal(value: Any, indent: int = 0, *, key: str = "") -> str:
    """A JavaScript expression for a JSON value; response modalities as ``Modality.X``."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{pad}  {k if _JS_IDENTIFIER.fullmatch(k) else json.dumps(k)}: "
            f"{js_literal(v, indent + 2, key=k)},"
            for k, v in value.items()
        ]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if key == "responseModalities" and value and set(value) <= JS_MODALITIES:
            return "[" + ", ".join(f"Modality.{item}" for item in value) + "]"
        if all(not isinstance(item, dict | list) for item in value):
            return "[" + ", ".join(js_literal(item) for item in value) + "]"
        items = [f"{pad}  {js_literal(item, indent + 2)}," for item in value]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    return json.dumps(value)  # strings, numbers, true/false/null are JSON's own spelling


def python_literal(value: Any, indent: int = 0) -> str:
    """A Python expression for a JSON value, one key per line."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{pad}    {json.dumps(k)}: {python_literal(v, indent + 4)}," for k, v in value.items()
        ]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return "[" + ", ".join(python_literal(item) for item in value) + "]"
        items = [f"{pad}    {python_literal(item, indent + 4)}," for item in value]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    if isinstance(value, bool) or value is None:
        return repr(value)
    return json.dumps(value)  # a JSON string or number is a Python literal too


def js_browser_snippet(*, model: str, config: dict[str, Any], lock: list[str]) -> str:
    js_config = _sdk_config(config, camel_case=True)
    modality = "Modality" in js_literal(js_config)
    lock_lines = "\n".join(f"// {line}" for line in lock)
    return f"""\
import {{ GoogleGenAI{", Modality" if modality else ""} }} from "@google/genai";

// Your own endpoint, which signs your user in and calls Ephemera (see above). The client key
// stays on your server: the browser only ever sees this short-lived token.
const response = await fetch("/your-backend/gemini-token", {{ method: "POST" }});
const token = await response.json().catch(() => ({{}}));
if (!response.ok) {{
  // Have your endpoint pass Ephemera's error on: {{"error": {{"code": …, "message": …}}}}.
  const {{ code = "", message = "" }} = token.error ?? {{}};
  throw new Error(`No Live token: ${{response.status}} ${{code}} ${{message}}`);
}}

// The token's name ("auth_tokens/…") is the API key; ephemeral tokens work only on v1alpha.
const ai = new GoogleGenAI({{ apiKey: token.token, httpOptions: {{ apiVersion: "v1alpha" }} }});

{lock_lines}
// Google refuses a spent or expired token by closing the socket (1008 and a reason):
// onclose ends the wait for the session then, with the code and reason.
const session = await new Promise((resolve, reject) => {{
  ai.live
    .connect({{
      model: {json.dumps(model)},
      config: {js_literal(js_config, 6)},
      callbacks: {{
        onopen: () => console.log("Live session open"),
        onmessage: (message) => {{
          for (const part of message.serverContent?.modelTurn?.parts ?? []) {{
            if (part.inlineData) console.log("audio:", part.inlineData.mimeType); // for your player
            else if (part.text) console.log(part.text);
          }}
          if (message.serverContent?.turnComplete) session.close();
        }},
        onerror: (event) => console.error("Live session error:", event.error ?? event),
        onclose: (event) => {{
          console.log(`Live session closed: ${{event.code}} ${{event.reason}}`);
          reject(new Error(`Live session refused: ${{event.code}} ${{event.reason}}`));
        }},
      }},
    }})
    .then(resolve, reject);
}});

session.sendClientContent({{ turns: "Hello!", turnComplete: true }});
"""


def python_client_snippet(*, model: str, config: dict[str, Any], lock: list[str]) -> str:
    py_config = _sdk_config(config, camel_case=False)
    lock_lines = "\n".join(f"# {line}" for line in lock)
    return f"""\
import asyncio
import sys

from google import genai
from google.genai import errors

MODEL = {json.dumps(model)}
{lock_lines}
CONFIG = {python_literal(py_config)}


async def talk(token: str) -> None:
    # The token's name ("auth_tokens/…") is the API key; ephemeral tokens work only on v1alpha.
    client = genai.Client(api_key=token, http_options={{"api_version": "v1alpha"}})
    audio = bytearray()  # 16-bit PCM at 24 kHz, for your player
    async with client.aio.live.connect(model=MODEL, config=CONFIG) as session:
        await session.send_client_content(
            turns={{"role": "user", "parts": [{{"text": "Hello!"}}]}}, turn_complete=True
        )
        async for message in session.receive():
            turn = message.server_content and message.server_content.model_turn
            for part in (turn and turn.parts) or []:
                if part.inline_data:
                    audio += part.inline_data.data
                elif part.text and not part.thought:
                    print(part.text, end="", flush=True)
    print(f"\\n{{len(audio)}} bytes of audio" if audio else "")


if __name__ == "__main__":
    try:
        asyncio.run(talk(sys.argv[1]))  # the "token" your backend got from Ephemera
    except errors.APIError as error:
        # Google refused or ended the session, e.g. 1008 for a spent or expired token.
        sys.exit(f"Live session refused: {{error.code}} {{error.message or error.details}}")
"""
