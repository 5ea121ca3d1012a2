"""The client guide's Live snippets, exactly as rendered, against the Live sandbox.

A token comes from the real portal (uvicorn, minting through the sandbox); the snippet runs
as its own program, as a tenant would run it. Nothing in its text is changed: both SDKs take
their base URL from ``GOOGLE_GEMINI_BASE_URL`` (their own setting), pointed at the sandbox's
TLS listener, whose CA the Python SDK trusts through ``SSL_CERT_FILE`` and node through
``NODE_EXTRA_CA_CERTS``. The browser snippet's ``fetch("/your-backend/…")`` is answered by
tests/policies/guide_js/harness.mjs, standing in for the tenant's endpoint.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from apps.policies import services as policy_services
from apps.policies.guides import profile_guide

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gemini-2.0-flash-live-001"
# What the snippet was rendered with: copied before the admin changed the profile to the
# token's config below, so the client asks for values the token may or may not let it keep.
SNIPPET_CONFIG = {
    "response_modalities": ["TEXT"],
    "temperature": 0.2,
    "system_instruction": "Answer in one word.",
}
TOKEN_CONFIG = {"response_modalities": ["TEXT"], "temperature": 0.9}
HARNESS = Path(__file__).parent / "guide_js" / "harness.mjs"
RUN_TIMEOUT = 60  # seconds: a snippet that hangs fails the test instead of stalling the suite


def issue(portal_url: str, world) -> dict:
    """A token from the portal, as the tenant's backend gets it."""
    answer = requests.post(
        f"{portal_url}/api/v1/tokens",
        headers={"Authorization": f"Bearer {world.raw_client_key}"},
        json={"profile": world.profile.slug, "end_user": "user-123"},
        timeout=15,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def set_profile(world, **fields) -> None:
    world.profile = policy_services.profile_update(
        organization=world.organization, profile=world.profile, actor=world.owner, **fields
    )


def rendered(world, key: str) -> str:
    guide = profile_guide(profile=world.profile, portal_url="https://ephemera.example.com/")
    return {snippet.key: snippet.code for snippet in guide.snippets}[key]


def session_of(live_sandbox, token: str) -> list[dict]:
    return [record for record in live_sandbox.state.live_sessions if record["token"] == token]


def sdk_env(live_sandbox) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"}
    }
    return {
        **env,
        "GOOGLE_GEMINI_BASE_URL": live_sandbox.live_url,
        "SSL_CERT_FILE": str(live_sandbox.ca_file),
        "NODE_EXTRA_CA_CERTS": str(live_sandbox.ca_file),
    }


# --- the Python Live client ------------------------------------------------------------------


def run_python_client(code: str, token: str, live_sandbox, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "live_client.py"
    script.write_text(code)
    return subprocess.run(  # noqa: S603 (the guide's snippet, run as its user would)
        [sys.executable, str(script), token],
        capture_output=True,
        text=True,
        env=sdk_env(live_sandbox),
        timeout=RUN_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    ("lock_mode", "lock_additional_fields", "keeps_instruction"),
    [
        ("whole_setup", [], False),  # the token's setup replaces the client's
        ("fields_set", [], True),  # temperature is the token's; the instruction stays the client's
        (
            "fields_set_plus",
            ["system_instruction"],
            False,
        ),  # listed, unset: the client's is dropped
    ],
)
def test_python_client_runs_under_every_lock(
    two_orgs,
    live_portal,
    live_sandbox,
    tmp_path,
    lock_mode,
    lock_additional_fields,
    keeps_instruction,
):
    alpha, _ = two_orgs
    set_profile(alpha, config=SNIPPET_CONFIG, lock_mode="whole_setup")
    code = rendered(alpha, "python-client")
    set_profile(
        alpha,
        config=TOKEN_CONFIG,
        lock_mode=lock_mode,
        lock_additional_fields=lock_additional_fields,
    )
    issued = issue(live_portal, alpha)

    ran = run_python_client(code, issued["token"], live_sandbox, tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert "sandbox reply to 'Hello!'" in ran.stdout  # the reply, printed
    assert "temperature 0.9" in ran.stdout  # locked: the token's value, not the snippet's 0.2
    (session,) = session_of(live_sandbox, issued["token"])
    assert session["client_setup"]["generationConfig"]["temperature"] == 0.2
    assert session["applied_setup"]["generationConfig"]["temperature"] == 0.9
    assert ("systemInstruction" in session["applied_setup"]) is keeps_instruction
    assert f"system instruction {'set' if keeps_instruction else 'none'}" in ran.stdout
    assert issued["lock"] == ("whole_setup" if lock_mode == "whole_setup" else "fields")


def test_python_client_prints_audio_without_sdk_warnings(
    two_orgs, live_portal, live_sandbox, tmp_path
):
    """An AUDIO profile: every chunk is audio, and ``message.text`` would warn about it."""
    alpha, _ = two_orgs  # {"response_modalities": ["AUDIO"]}, whole setup
    issued = issue(live_portal, alpha)

    ran = run_python_client(
        rendered(alpha, "python-client"), issued["token"], live_sandbox, tmp_path
    )

    assert "non-text parts" not in ran.stderr  # the SDK's warning, once per run
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "9600 bytes of audio"  # the sandbox's 0.2 s burst


def test_python_client_shows_a_refused_session_and_exits_non_zero(
    two_orgs, live_portal, live_sandbox, tmp_path
):
    alpha, _ = two_orgs
    set_profile(alpha, config=TOKEN_CONFIG, uses=1)
    issued = issue(live_portal, alpha)
    code = rendered(alpha, "python-client")
    assert run_python_client(code, issued["token"], live_sandbox, tmp_path).returncode == 0

    spent = run_python_client(code, issued["token"], live_sandbox, tmp_path)  # its one use is gone

    assert spent.returncode == 1
    refusal = session_of(live_sandbox, issued["token"])[-1]
    assert refusal["close_code"] == 1008
    assert f"Live session refused: 1008 {refusal['close_reason']}" in spent.stderr
    assert "Traceback" not in spent.stderr


# --- the browser's JavaScript, under node with the pinned @google/genai ----------------------


def run_js_client(
    code: str, backend_status: int, backend_body: dict, live_sandbox, tmp_path, node, genai_js
) -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "snippet.mjs"
    script.write_text(code)
    (tmp_path / "node_modules").symlink_to(genai_js, target_is_directory=True)
    env = {
        **sdk_env(live_sandbox),
        "GUIDE_BACKEND_STATUS": str(backend_status),
        "GUIDE_BACKEND_BODY": json.dumps(backend_body),
    }
    return subprocess.run(  # noqa: S603 (the guide's snippet, run as its user would)
        [node, str(HARNESS), str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_js_client_opens_a_session_and_prints_the_reply(
    two_orgs, live_portal, live_sandbox, tmp_path, node, genai_js
):
    alpha, _ = two_orgs
    set_profile(alpha, config=TOKEN_CONFIG, lock_mode="fields_set")
    issued = issue(live_portal, alpha)

    ran = run_js_client(
        rendered(alpha, "js-browser"), 201, issued, live_sandbox, tmp_path, node, genai_js
    )

    assert ran.returncode == 0, ran.stderr
    assert "Live session open" in ran.stdout
    assert "sandbox reply to 'Hello!'" in ran.stdout
    assert "temperature 0.9" in ran.stdout
    (session,) = session_of(live_sandbox, issued["token"])
    assert session["via"] == "query"  # the JS SDK's ?access_token=


def test_js_client_shows_a_spent_token_and_stops(
    two_orgs, live_portal, live_sandbox, tmp_path, node, genai_js
):
    alpha, _ = two_orgs
    set_profile(alpha, config=TOKEN_CONFIG, uses=1)
    issued = issue(live_portal, alpha)
    code = rendered(alpha, "js-browser")
    first = run_js_client(code, 201, issued, live_sandbox, tmp_path / "first", node, genai_js)
    assert first.returncode == 0, first.stderr

    spent = run_js_client(code, 201, issued, live_sandbox, tmp_path / "second", node, genai_js)

    assert spent.returncode != 0  # it ended, rather than waiting for a session
    refusal = session_of(live_sandbox, issued["token"])[-1]
    assert refusal["close_code"] == 1008
    assert f"Live session closed: 1008 {refusal['close_reason']}" in spent.stdout
    assert f"Live session refused: 1008 {refusal['close_reason']}" in spent.stderr


def test_js_client_shows_the_backends_refusal(
    two_orgs, live_portal, live_sandbox, tmp_path, node, genai_js
):
    alpha, _ = two_orgs
    sessions_before = len(live_sandbox.state.live_sessions)
    refusal = {"error": {"code": "quota_exceeded", "message": "The hourly quota is used up."}}

    ran = run_js_client(
        rendered(alpha, "js-browser"), 429, refusal, live_sandbox, tmp_path, node, genai_js
    )

    assert ran.returncode != 0
    assert "No Live token: 429 quota_exceeded The hourly quota is used up." in ran.stderr
    assert len(live_sandbox.state.live_sessions) == sessions_before  # no session was tried
