"""The sandbox's Live side through the real google-genai SDK: tokens minted by the portal or by
the SDK's ``auth_tokens.create``, sessions opened with ``client.aio.live.connect`` over TLS."""

import asyncio
import json
import ssl
from datetime import UTC, datetime, timedelta

import pytest
import requests
import websockets
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from google import genai
from google.genai import errors

from apps.issuance import gateway
from apps.issuance.sandbox.live import LIVE_PATH, MintedToken, applied_setup
from apps.issuance.sandbox.tls import sandbox_certificates
from apps.policies import services as policy_services
from apps.policies.models import LockMode
from tests.conftest import Clock
from tests.issuance.conftest import bearer

MODEL = "gemini-2.0-flash-live-001"
HELLO = {"role": "user", "parts": [{"text": "Hello"}]}


@pytest.fixture
def live(live_sandbox, monkeypatch, settings):
    """The live sandbox trusted by the SDK (``SSL_CERT_FILE``), the portal minting through it,
    and its clock in the test's hands."""
    monkeypatch.setenv("SSL_CERT_FILE", str(live_sandbox.ca_file))
    settings.GEMINI_BASE_URL = live_sandbox.url
    gateway.clients.clear()
    monkeypatch.setattr(live_sandbox.state, "now", Clock(datetime.now(UTC)))
    yield live_sandbox
    gateway.clients.clear()


def mint(live_sandbox, **config) -> str:
    """A token from the SDK's own ``auth_tokens.create``, against the TLS listener."""
    admin = genai.Client(
        api_key="sandbox-admin-key",
        http_options={"api_version": "v1alpha", "base_url": live_sandbox.live_url},
    )
    now = live_sandbox.state.now()
    config.setdefault("expire_time", now + timedelta(minutes=30))
    config.setdefault("new_session_expire_time", now + timedelta(minutes=1))
    return admin.auth_tokens.create(config=config).name


def user_client(live_sandbox, token: str) -> genai.Client:
    return genai.Client(
        api_key=token, http_options={"api_version": "v1alpha", "base_url": live_sandbox.live_url}
    )


async def one_turn(live_sandbox, token: str, config: dict | None = None, model: str = MODEL):
    """Open a session, say Hello, and return every message up to the turn's end."""
    client = user_client(live_sandbox, token)
    async with client.aio.live.connect(model=model, config=config or {}) as session:
        await session.send_client_content(turns=HELLO, turn_complete=True)
        return [message async for message in session.receive()]


def reply_text(messages) -> str:
    return "".join(message.text or "" for message in messages)


def handle_in(messages) -> str:
    (update,) = [m.session_resumption_update for m in messages if m.session_resumption_update]
    assert update.resumable is True
    return update.new_handle


def sessions_of(live_sandbox, token: str) -> list[dict]:
    return [s for s in live_sandbox.state.live_sessions if s["token"] == token]


async def refusal(live_sandbox, token: str, config: dict | None = None) -> errors.APIError:
    with pytest.raises(errors.APIError) as refused:
        await one_turn(live_sandbox, token, config)
    assert refused.value.code == 1008
    return refused.value


async def portal_token(raw_key: str, profile: str) -> dict:
    response = await AsyncClient().post(
        "/api/v1/tokens",
        json.dumps({"profile": profile, "end_user": "live-user"}),
        content_type="application/json",
        headers=bearer(raw_key),
    )
    assert response.status_code == 201, response.content
    return response.json()


async def text_profile(world, *, lock_mode: str) -> str:
    profile = await sync_to_async(policy_services.profile_create)(
        organization=world.organization,
        actor=world.owner,
        slug="text-tutor",
        name="Text tutor",
        model=MODEL,
        config={"response_modalities": ["TEXT"], "temperature": 0.2},
        lock_mode=lock_mode,
    )
    await sync_to_async(world.client_app.allowed_profiles.add)(profile)
    return profile.slug


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_whole_setup_token_ignores_the_clients_tools_and_temperature(live, two_orgs):
    alpha, _ = two_orgs
    profile = await text_profile(alpha, lock_mode=LockMode.WHOLE_SETUP)
    token = (await portal_token(alpha.raw_client_key, profile))["token"]

    messages = await one_turn(
        live,
        token,
        {
            "response_modalities": ["AUDIO"],
            "temperature": 0.9,
            "tools": [{"google_search": {}}],
        },
        model="gemini-other-model",
    )

    text = reply_text(messages)
    assert "modality TEXT" in text
    assert "temperature 0.2" in text
    assert "tools none" in text
    assert f"model models/{MODEL}" in text
    assert messages[-1].server_content.turn_complete
    (session,) = sessions_of(live, token)
    assert session["applied_setup"] == {
        "model": f"models/{MODEL}",
        "generationConfig": {"responseModalities": ["TEXT"], "temperature": 0.2},
    }
    assert session["client_setup"]["generationConfig"]["temperature"] == 0.9


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_field_lock_keeps_the_locked_value_and_applies_what_is_unlocked(live, two_orgs):
    alpha, _ = two_orgs
    profile = await text_profile(alpha, lock_mode=LockMode.FIELDS_SET)
    token = (await portal_token(alpha.raw_client_key, profile))["token"]

    text = reply_text(
        await one_turn(
            live,
            token,
            {
                "temperature": 0.9,
                "system_instruction": "Answer in French.",
                "tools": [{"google_search": {}}],
            },
        )
    )

    assert "temperature 0.2" in text  # locked: the token's value
    assert "system instruction set" in text  # not locked: the client's
    assert "tools 1" in text
    (session,) = sessions_of(live, token)
    assert session["applied_setup"]["systemInstruction"]["parts"] == [{"text": "Answer in French."}]


@pytest.mark.asyncio
async def test_an_audio_session_gets_pcm_audio_then_the_turn_complete(live):
    token = mint(
        live,
        uses=1,
        live_connect_constraints={"model": MODEL, "config": {"response_modalities": ["AUDIO"]}},
    )

    messages = await one_turn(live, token)

    parts = [
        p
        for m in messages
        if m.server_content and m.server_content.model_turn
        for p in m.server_content.model_turn.parts
    ]
    assert [p.inline_data.mime_type for p in parts] == ["audio/pcm;rate=24000"]
    assert len(parts[0].inline_data.data) == 9600  # 0.2 s of 16-bit mono at 24 kHz
    assert messages[-1].server_content.turn_complete


@pytest.mark.asyncio
async def test_a_spent_token_refuses_the_next_new_session_with_its_reason(live):
    token = mint(live, uses=1)
    await one_turn(live, token, {"response_modalities": ["TEXT"]})

    refused = await refusal(live, token, {"response_modalities": ["TEXT"]})

    assert "no uses left" in refused.details
    assert sessions_of(live, token)[-1]["close_reason"] == refused.details


@pytest.mark.asyncio
async def test_a_token_with_unlimited_uses_opens_session_after_session(live):
    token = mint(live, uses=0)
    for _ in range(3):
        assert "modality TEXT" in reply_text(
            await one_turn(live, token, {"response_modalities": ["TEXT"]})
        )


@pytest.mark.asyncio
async def test_an_expired_token_is_refused(live):
    token = mint(live, uses=0, expire_time=live.state.now.now + timedelta(minutes=5))
    live.state.now.advance(minutes=5)

    refused = await refusal(live, token)

    assert "expired" in refused.details


@pytest.mark.asyncio
async def test_resuming_with_a_handle_is_not_a_use(live):
    token = mint(
        live,
        uses=1,
        live_connect_constraints={
            "model": MODEL,
            "config": {"response_modalities": ["TEXT"], "session_resumption": {}},
        },
    )
    first = await one_turn(live, token)
    assert "resumed no" in reply_text(first)

    resumed = await one_turn(live, token, {"session_resumption": {"handle": handle_in(first)}})

    assert "resumed yes" in reply_text(resumed)
    assert handle_in(resumed) != handle_in(first)
    assert [s["resumed"] for s in sessions_of(live, token)] == [False, True]
    assert "no uses left" in (await refusal(live, token)).details


@pytest.mark.asyncio
async def test_after_the_new_session_window_only_resumption_opens_a_session(live):
    token = mint(
        live,
        uses=0,
        new_session_expire_time=live.state.now.now + timedelta(minutes=1),
        live_connect_constraints={
            "model": MODEL,
            "config": {"response_modalities": ["TEXT"], "session_resumption": {}},
        },
    )
    handle = handle_in(await one_turn(live, token))
    live.state.now.advance(minutes=2)

    refused = await refusal(live, token)
    resumed = await one_turn(live, token, {"session_resumption": {"handle": handle}})

    assert "only resumption" in refused.details
    assert "resumed yes" in reply_text(resumed)
    live.state.now.advance(minutes=30)
    assert (
        "expired"
        in (await refusal(live, token, {"session_resumption": {"handle": handle}})).details
    )


@pytest.mark.asyncio
async def test_a_handle_issued_for_another_token_is_refused(live):
    constraints = {"model": MODEL, "config": {"session_resumption": {}}}
    other_handle = handle_in(await one_turn(live, mint(live, live_connect_constraints=constraints)))
    token = mint(live, live_connect_constraints=constraints)

    refused = await refusal(live, token, {"session_resumption": {"handle": other_handle}})

    assert "handle not valid" in refused.details


@pytest.mark.asyncio
async def test_a_token_the_sandbox_did_not_mint_is_refused(live):
    refused = await refusal(live, "auth_tokens/made-up")

    assert "did not mint" in refused.details
    assert sessions_of(live, "auth_tokens/made-up")[-1]["outcome"] == "refused"


@pytest.mark.asyncio
async def test_the_js_style_access_token_query_is_accepted(live):
    """The JS SDK sends the token in the query and joins its base URL's slash: ``//ws/…``."""
    token = mint(live, uses=1)

    async with raw_socket(live, path="/" + LIVE_PATH, query=f"?access_token={token}") as ws:
        await ws.send(
            json.dumps(
                {
                    "setup": {
                        "model": f"models/{MODEL}",
                        "generationConfig": {"responseModalities": ["TEXT"]},
                    }
                }
            )
        )
        assert "setupComplete" in json.loads(await ws.recv())
        await ws.send(json.dumps({"realtimeInput": {"text": "Hello"}}))
        reply = json.loads(await ws.recv())
        assert "sandbox reply to 'Hello'" in reply["serverContent"]["modelTurn"]["parts"][0]["text"]
        assert json.loads(await ws.recv()) == {"serverContent": {"turnComplete": True}}

    (session,) = sessions_of(live, token)
    assert session["via"] == "query"


def raw_socket(live_sandbox, *, path: str = LIVE_PATH, query: str = ""):
    """A WebSocket to the Live side, opened as no SDK would: path, query and messages by hand."""
    url = live_sandbox.live_url.replace("https://", "wss://") + path + query
    return websockets.connect(url, ssl=ssl.create_default_context(cafile=str(live_sandbox.ca_file)))


async def raw_close(live_sandbox, first: str, *, path: str = LIVE_PATH, query: str = ""):
    """Send ``first`` on a raw socket and return the close code and reason it got."""
    async with raw_socket(live_sandbox, path=path, query=query) as ws:
        await ws.send(first)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    return closed.value.rcvd.code, closed.value.rcvd.reason


TEXT_SETUP = json.dumps({"setup": {"model": f"models/{MODEL}"}})


@pytest.mark.asyncio
async def test_a_session_without_a_token_is_refused_with_how_to_send_one(live):
    code, reason = await raw_close(live, TEXT_SETUP)

    assert code == 1008
    assert "Authorization: Token" in reason and "access_token" in reason


@pytest.mark.asyncio
async def test_a_token_on_the_unconstrained_method_is_refused_and_keeps_its_use(live):
    token = mint(live, uses=1)
    unconstrained = LIVE_PATH.replace("BidiGenerateContentConstrained", "BidiGenerateContent")

    code, reason = await raw_close(
        live, TEXT_SETUP, path=unconstrained, query=f"?access_token={token}"
    )

    assert (code, reason) == (1008, "Ephemeral tokens work on BidiGenerateContentConstrained.")
    assert "sandbox reply" in reply_text(
        await one_turn(live, token, {"response_modalities": ["TEXT"]})
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "first", ["not json", json.dumps({"setup": "voice"}), json.dumps({"clientContent": {}})]
)
async def test_a_first_message_that_is_not_a_setup_is_refused_and_keeps_the_use(live, first):
    token = mint(live, uses=1)

    code, reason = await raw_close(live, first, query=f"?access_token={token}")

    assert (code, reason) == (1007, "The first message must be {'setup': {...}}.")
    assert sessions_of(live, token)[-1]["outcome"] == "refused"
    assert "sandbox reply" in reply_text(
        await one_turn(live, token, {"response_modalities": ["TEXT"]})
    )


@pytest.mark.asyncio
async def test_a_message_that_is_not_json_ends_an_open_session(live):
    token = mint(live, uses=1)

    async with raw_socket(live, query=f"?access_token={token}") as ws:
        await ws.send(TEXT_SETUP)
        assert "setupComplete" in json.loads(await ws.recv())
        await ws.send("{half a message")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()

    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1007,
        "Invalid JSON payload received.",
    )
    assert sessions_of(live, token)[-1]["outcome"] == "closed"


def test_the_sessions_are_listed_at_the_control_endpoint(live):
    token = mint(live, uses=1)

    asyncio.run(one_turn(live, token, {"response_modalities": ["TEXT"]}))

    listed = requests.get(f"{live.url}/_sandbox/live", timeout=5).json()

    (session,) = [s for s in listed if s["token"] == token]
    assert session["turns"] == 1
    assert session["applied_setup"]["generationConfig"] == {"responseModalities": ["TEXT"]}


def test_a_mask_takes_snake_case_and_camel_case_paths():
    token = MintedToken(
        body={
            "bidiGenerateContentSetup": {
                "model": "models/locked",
                "generationConfig": {"temperature": 0.2, "response_modalities": ["TEXT"]},
            },
            "fieldMask": "generation_config.temperature,generationConfig.responseModalities,"
            "sessionResumption",
        },
        minted_at=datetime.now(UTC),
    )
    client = {
        "model": "models/mine",
        "generationConfig": {"temperature": 0.9, "responseModalities": ["AUDIO"], "topK": 3},
        "session_resumption": {"handle": "h"},
    }

    applied = applied_setup(client, token)

    assert applied == {
        "model": "models/mine",  # not masked: the client's
        "generationConfig": {"temperature": 0.2, "responseModalities": ["TEXT"], "topK": 3},
        # masked but unset in the token: locked to unset
    }


def test_the_certificates_are_reused_while_valid_and_remade_when_not(tmp_path):
    first = sandbox_certificates(tmp_path)
    ca = first.ca_file.read_bytes()

    assert sandbox_certificates(tmp_path).ca_file.read_bytes() == ca
    first.key_file.write_bytes(b"not a key")
    assert sandbox_certificates(tmp_path).ca_file.read_bytes() != ca
