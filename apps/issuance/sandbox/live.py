"""The Live side of the sandbox: ``BidiGenerateContentConstrained`` over a WebSocket.

It accepts only tokens this sandbox minted and enforces what Google documents for them:
``expireTime``, ``newSessionExpireTime`` for new sessions, ``uses`` counted per new session
(0 = unlimited), and resumption with a handle it issued for that token, which is not a use
and is allowed until ``expireTime``. A refusal closes the socket with 1008 and a plain
reason, which the Python SDK raises as ``APIError`` (code 1008, the reason as its details).

The token's constraints are applied as Google documents: without ``fieldMask`` its setup
replaces the client's; with one, the masked fields come from the token and the rest from the
client. Each client turn gets a short reply, then ``turnComplete``: text saying what was
applied (TEXT), or a PCM tone (AUDIO) with that text as ``outputTranscription`` when the setup
asks for it.
"""

import base64
import copy
import json
import math
import re
import secrets
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

LIVE_PATH = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)
POLICY_VIOLATION = 1008
INVALID_PAYLOAD = 1007
AUDIO_MIME = "audio/pcm;rate=24000"
AUDIO_RATE = 24_000
AUDIO_SECONDS = 0.2  # 4800 samples, 9600 bytes of 16-bit PCM
DEFAULT_EXPIRE = timedelta(minutes=30)
DEFAULT_NEW_SESSION = timedelta(seconds=60)


@dataclass
class MintedToken:
    """What the sandbox remembers of a token it minted, and how it has been used."""

    body: dict[str, Any]
    minted_at: datetime
    sessions: int = 0
    handles: set[str] = field(default_factory=set)

    @property
    def uses(self) -> int:
        return int(self.body.get("uses", 1))

    @property
    def expire_time(self) -> datetime:
        return _time(self.body.get("expireTime")) or self.minted_at + DEFAULT_EXPIRE

    @property
    def new_session_expire_time(self) -> datetime:
        moment = _time(self.body.get("newSessionExpireTime"))
        return moment or self.minted_at + DEFAULT_NEW_SESSION

    @property
    def setup(self) -> dict[str, Any] | None:
        return self.body.get("bidiGenerateContentSetup")

    @property
    def field_mask(self) -> list[str] | None:
        mask = self.body.get("fieldMask")
        if mask is None:
            return None
        paths = mask.split(",") if isinstance(mask, str) else mask.get("paths", [])
        return [path.strip() for path in paths if path.strip()]


class Refused(Exception):
    """A session the sandbox will not open: closed with 1008 (policy violation) and
    ``reason``, as Google closes it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def timestamp(value: Any) -> datetime:
    """A token time as Google writes it (RFC 3339, ``Z`` for UTC); ValueError if it is not."""
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _time(value: Any) -> datetime | None:
    return timestamp(value) if value else None


def _camel(name: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def _key(mapping: dict[str, Any], name: str) -> str | None:
    """The key of ``mapping`` that spells ``name`` (snake_case or camelCase), if any."""
    wanted = _camel(name)
    return next((key for key in mapping if _camel(key) == wanted), None)


def get_path(setup: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = setup
    for part in path.split("."):
        key = _key(node, part) if isinstance(node, dict) else None
        if key is None:
            return False, None
        node = node[key]
    return True, node


def set_path(setup: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = setup
    for part in parents:
        key = _key(node, part)
        if key is None or not isinstance(node[key], dict):
            key = key or _camel(part)
            node[key] = {}
        node = node[key]
    node[_key(node, last) or _camel(last)] = copy.deepcopy(value)


def delete_path(setup: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node: Any = setup
    for part in parents:
        key = _key(node, part) if isinstance(node, dict) else None
        if key is None:
            return
        node = node[key]
    if isinstance(node, dict) and (key := _key(node, last)) is not None:
        del node[key]


def applied_setup(client: dict[str, Any], token: MintedToken) -> dict[str, Any]:
    """The setup the session runs with: the token's constraints over the client's setup."""
    constraints = token.setup
    if constraints is None:
        return copy.deepcopy(client)
    mask = token.field_mask
    if mask is None:
        applied = copy.deepcopy(constraints)
    else:
        applied = copy.deepcopy(client)
        for path in mask:
            present, value = get_path(constraints, path)
            if present:
                set_path(applied, path, value)
            else:
                delete_path(applied, path)
    if _key(applied, "model") is None and _key(client, "model") is not None:
        applied["model"] = client[_key(client, "model")]
    return applied


def token_from(scope: dict[str, Any]) -> str:
    """The token as the Python SDK (``Authorization: Token``) or the JS SDK (query) sends it."""
    headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
    authorization = headers.get("authorization", "")
    if authorization.startswith("Token "):
        return authorization.removeprefix("Token ").strip()
    query = parse_qs(scope.get("query_string", b"").decode())
    return query["access_token"][0] if query.get("access_token") else ""


def admit(token: MintedToken | None, name: str, handle: str | None, now: datetime) -> bool:
    """Whether this session may open; True when it resumes. Raises ``Refused`` otherwise."""
    if not name:
        raise Refused("Missing ephemeral token: send Authorization: Token <name> or ?access_token=")
    if token is None:
        raise Refused("Ephemeral token not valid: this sandbox did not mint it.")
    if now >= token.expire_time:
        raise Refused(f"Ephemeral token expired at {token.expire_time.isoformat()}.")
    if handle:
        if handle not in token.handles:
            raise Refused("Session resumption handle not valid for this token.")
        return True
    if now >= token.new_session_expire_time:
        raise Refused(
            "New sessions closed at "
            f"{token.new_session_expire_time.isoformat()}; only resumption is allowed."
        )
    if token.uses and token.sessions >= token.uses:
        raise Refused(f"Ephemeral token has no uses left (uses: {token.uses}); resume instead.")
    return False


def modality(setup: dict[str, Any]) -> str:
    found, value = get_path(setup, "generationConfig.responseModalities")
    return str(value[0]).upper() if found and value else "AUDIO"


def summary(setup: dict[str, Any], said: str, resumed: bool) -> str:
    """The reply's text: what the sandbox applied, so a client can see its settings."""
    parts = [f"sandbox reply to {said!r}", f"modality {modality(setup)}"]
    _, model = get_path(setup, "model")
    parts.append(f"model {model}")
    found, temperature = get_path(setup, "generationConfig.temperature")
    parts.append(f"temperature {temperature if found else 'default'}")
    found, tools = get_path(setup, "tools")
    parts.append(f"tools {len(tools) if found and tools else 'none'}")
    found, _ = get_path(setup, "systemInstruction")
    parts.append(f"system instruction {'set' if found else 'none'}")
    parts.append(f"resumed {'yes' if resumed else 'no'}")
    return ", ".join(parts)


def pcm_burst() -> bytes:
    """A short 440 Hz tone, 16-bit little-endian mono at 24 kHz, as Live sends audio."""
    samples = int(AUDIO_RATE * AUDIO_SECONDS)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / AUDIO_RATE)))
        for n in range(samples)
    )


def said_in(message: dict[str, Any]) -> str | None:
    """The text of a finished client turn, or None when the message does not end a turn."""
    content = message.get("clientContent") or message.get("client_content")
    if content is not None:
        if not (content.get("turnComplete") or content.get("turn_complete")):
            return None
        texts = [
            part.get("text", "")
            for turn in content.get("turns") or []
            for part in turn.get("parts") or []
        ]
        return " ".join(t for t in texts if t)
    realtime = message.get("realtimeInput") or message.get("realtime_input")
    if realtime is not None and realtime.get("text"):
        return realtime["text"]
    return None


def reply(setup: dict[str, Any], said: str, resumed: bool) -> list[dict[str, Any]]:
    """The server messages for one client turn."""
    text = summary(setup, said, resumed)
    if modality(setup) == "TEXT":
        part = {"text": text}
    else:
        part = {
            "inlineData": {"mimeType": AUDIO_MIME, "data": base64.b64encode(pcm_burst()).decode()}
        }
    messages = [{"serverContent": {"modelTurn": {"role": "model", "parts": [part]}}}]
    if modality(setup) != "TEXT" and get_path(setup, "outputAudioTranscription")[0]:
        messages.append({"serverContent": {"outputTranscription": {"text": text}}})
    return messages


def session_resumption_update(token: MintedToken, setup: dict[str, Any]) -> dict | None:
    if not get_path(setup, "sessionResumption")[0]:
        return None
    handle = f"sandbox-handle-{secrets.token_urlsafe(12)}"
    token.handles.add(handle)
    return {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}


async def serve_live(state, scope, receive, send) -> None:
    """One Live session, from the WebSocket handshake to its close."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    name = token_from(scope)
    record: dict[str, Any] = {
        "token": name,
        "via": "query" if b"access_token=" in scope.get("query_string", b"") else "header",
        "resumed": False,
        "handle": None,
        "client_setup": None,
        "applied_setup": None,
        "outcome": "open",
        "close_code": None,
        "close_reason": None,
        "turns": 0,
        "at": state.now().isoformat(),
    }
    state.live_sessions.append(record)

    async def close(code: int, reason: str, outcome: str) -> None:
        record.update(outcome=outcome, close_code=code, close_reason=reason)
        await send({"type": "websocket.close", "code": code, "reason": reason})

    first = await receive()
    if first["type"] != "websocket.receive":
        record["outcome"] = "client closed"
        return
    try:
        client = json.loads(first.get("text") or first.get("bytes") or b"")["setup"]
        if not isinstance(client, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        await close(INVALID_PAYLOAD, "The first message must be {'setup': {...}}.", "refused")
        return
    record["client_setup"] = client
    found, resumption = get_path(client, "sessionResumption")
    handle = (resumption or {}).get("handle") if found and isinstance(resumption, dict) else None
    record["handle"] = handle
    # The JS SDK joins its base URL's trailing slash to "/ws/…": "//ws/…" reaches Google too.
    if re.sub("/+", "/", scope["path"]) != LIVE_PATH:
        await close(
            POLICY_VIOLATION, "Ephemeral tokens work on BidiGenerateContentConstrained.", "refused"
        )
        return
    token = state.tokens.get(name)
    try:
        resumed = admit(token, name, handle, state.now())
    except Refused as refusal:
        await close(POLICY_VIOLATION, refusal.reason, "refused")
        return
    if not resumed:
        token.sessions += 1
    setup = applied_setup(client, token)
    record.update(resumed=resumed, applied_setup=setup, outcome="open")
    await send_json(send, {"setupComplete": {"sessionId": f"sandbox-{secrets.token_hex(8)}"}})

    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            record["outcome"] = "client closed"
            return
        try:
            parsed = json.loads(message.get("text") or message.get("bytes") or b"")
        except ValueError:
            await close(INVALID_PAYLOAD, "Invalid JSON payload received.", "closed")
            return
        said = said_in(parsed) if isinstance(parsed, dict) else None
        if said is None:
            continue
        record["turns"] += 1
        for answer in reply(setup, said, resumed):
            await send_json(send, answer)
        update = session_resumption_update(token, setup)
        if update:
            await send_json(send, update)
        await send_json(send, {"serverContent": {"turnComplete": True}})


async def send_json(send, payload: dict[str, Any]) -> None:
    await send({"type": "websocket.send", "text": json.dumps(payload)})
