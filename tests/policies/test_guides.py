"""Client guides: snippets filled with the portal's address and the profile, never a key, and
snippets that run (the backend ones against a live portal) or at least parse. The client
snippets' runs against the Live sandbox are in test_guide_live.py."""

import ast
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from apps.audit.models import TokenGrant
from apps.policies import services as policy_services
from apps.policies.guides import (
    CLIENT_KEY_ENV,
    CLIENT_LIBRARY_INSTALL,
    EXAMPLE_END_USER,
    curl_snippet,
    profile_guide,
)
from apps.tenants.models import Role
from tests.conftest import well_inside_window

PORTAL = "https://ephemera.example.com/"
TOKENS_URL = "https://ephemera.example.com/api/v1/tokens"


def snippets(guide) -> dict[str, str]:
    return {snippet.key: snippet.code for snippet in guide.snippets}


def guide_url(profile) -> str:
    return reverse("admin:policies_liveconstraintprofile_guide", args=[profile.pk])


def node_check(node: str, tmp_path, code: str) -> subprocess.CompletedProcess:
    source = tmp_path / "snippet.mjs"
    source.write_text(code)
    return subprocess.run(  # noqa: S603 (node on a file this test wrote)
        [node, "--check", str(source)], capture_output=True, text=True, timeout=30, check=False
    )


CURL = shutil.which("curl")


# --- what the snippets say ------------------------------------------------------------------


@pytest.mark.django_db
def test_snippets_name_the_portal_and_the_profile_and_no_key(two_orgs):
    alpha, bravo = two_orgs

    guide = profile_guide(profile=alpha.profile, portal_url=PORTAL)

    assert guide.tokens_url == TOKENS_URL
    code = snippets(guide)
    assert set(code) == {"curl", "python-backend", "js-browser", "python-client"}
    assert TOKENS_URL in code["curl"]
    assert f'EphemeraClient("{PORTAL}",' in code["python-backend"]  # it knows the API's paths
    for key in ("curl", "python-backend"):
        assert '"alpha-voice"' in code[key], key
        assert CLIENT_KEY_ENV in code[key], key
    for key in ("js-browser", "python-client"):
        assert '"gemini-2.0-flash-live-001"' in code[key], key
    everything = "\n".join(code.values())
    for world in (alpha, bravo):
        assert world.raw_client_key not in everything
        assert world.raw_client_key.split("_")[2] not in everything  # not even the secret part
        assert "gemini-key" not in everything  # the org's Gemini key: "<slug>-gemini-key-0000"
    assert "bravo" not in everything.lower()


@pytest.mark.django_db
def test_client_snippets_use_the_token_as_a_v1alpha_api_key(two_orgs):
    alpha, _ = two_orgs

    code = snippets(profile_guide(profile=alpha.profile, portal_url=PORTAL))

    js = code["js-browser"]
    assert 'import { GoogleGenAI, Modality } from "@google/genai";' in js
    assert 'new GoogleGenAI({ apiKey: token.token, httpOptions: { apiVersion: "v1alpha" } })' in js
    assert "ai.live\n    .connect({" in js
    assert "responseModalities: [Modality.AUDIO]" in js  # the profile's config, as the JS SDK
    python = code["python-client"]
    assert 'genai.Client(api_key=token, http_options={"api_version": "v1alpha"})' in python
    assert "client.aio.live.connect(model=MODEL, config=CONFIG)" in python
    assert '"response_modalities": ["AUDIO"]' in python


@pytest.mark.django_db
def test_the_lock_is_explained_as_the_token_applies_it(two_orgs):
    alpha, _ = two_orgs
    profile = alpha.profile  # whole setup (the default lock)

    whole = snippets(profile_guide(profile=profile, portal_url=PORTAL))

    assert "locks the whole setup" in whole["js-browser"]
    assert "locks the whole setup" in whole["python-client"]

    profile = policy_services.profile_update(
        organization=alpha.organization,
        profile=profile,
        actor=alpha.owner,
        config={"response_modalities": ["TEXT"], "temperature": 0.5},
        lock_mode="fields_set",
    )
    guide = profile_guide(profile=profile, portal_url=PORTAL)

    assert guide.lock.lock == "fields"
    assert "generationConfig.temperature" in guide.lock.locked_fields
    code = snippets(guide)
    assert "generationConfig.temperature" in code["js-browser"]
    assert "temperature: 0.5," in code["js-browser"]
    assert '"temperature": 0.5,' in code["python-client"]
    assert "[Modality.TEXT]" in code["js-browser"]


# --- what the snippets do when something is refused ----------------------------------------


@pytest.mark.django_db
def test_the_python_client_reads_audio_parts_and_not_message_text(two_orgs):
    """``message.text`` on an audio chunk logs an SDK warning on every chunk: the snippet reads
    the turn's parts, audio first, and prints only text parts (run: test_guide_live.py)."""
    alpha, _ = two_orgs  # an AUDIO profile

    python = snippets(profile_guide(profile=alpha.profile, portal_url=PORTAL))["python-client"]

    assert "message.text" not in python and "message.data" not in python
    assert "for part in (turn and turn.parts) or []:" in python
    assert python.index("if part.inline_data:") < python.index("elif part.text")


@pytest.mark.django_db
def test_client_snippets_stop_on_a_refusal_and_say_why(two_orgs):
    alpha, _ = two_orgs

    code = snippets(profile_guide(profile=alpha.profile, portal_url=PORTAL))

    python = code["python-client"]
    assert "except errors.APIError as error:" in python
    assert 'sys.exit(f"Live session refused: {error.code} ' in python  # stderr, status 1
    js = code["js-browser"]
    assert js.index("if (!response.ok) {") < js.index("new GoogleGenAI(")
    assert "throw new Error(`No Live token: ${response.status} ${code} ${message}`);" in js
    assert "event.message" not in js  # a browser's WebSocket error event has no message
    assert 'onerror: (event) => console.error("Live session error:", event.error ?? event),' in js
    assert "reject(new Error(`Live session refused: ${event.code} ${event.reason}`));" in js
    assert ".then(resolve, reject);" in js


@pytest.mark.django_db
def test_the_python_backend_uses_the_client_library_and_says_how_to_install_it(two_orgs):
    alpha, _ = two_orgs

    guide = profile_guide(profile=alpha.profile, portal_url=PORTAL)

    (backend,) = [snippet for snippet in guide.snippets if snippet.key == "python-backend"]
    assert (
        "from ephemera_client import EphemeraClient, EphemeraError, QuotaExceeded" in backend.code
    )
    assert f'EphemeraClient("{PORTAL}", os.environ["{CLIENT_KEY_ENV}"])' in backend.code
    assert "requests" not in backend.code
    assert CLIENT_LIBRARY_INSTALL in backend.note
    readme = (Path(__file__).parents[2] / "clients" / "python" / "README.md").read_text()
    assert CLIENT_LIBRARY_INSTALL in readme  # the library's own instructions agree


HOSTILE = "Say \"hi\" & 'bye' `whoami` ${process.env} </code><script>alert(1)</script>\n\\ ok"


@pytest.fixture
def hostile_profile(two_orgs):
    """A profile whose free text would break a naively quoted snippet."""
    alpha, _ = two_orgs
    return policy_services.profile_update(
        organization=alpha.organization,
        profile=alpha.profile,
        actor=alpha.owner,
        config={
            "response_modalities": ["AUDIO"],
            "system_instruction": HOSTILE,
            "tools": [
                {
                    "function_declarations": [
                        {
                            "name": "lookup",
                            "parameters": {
                                "type": "OBJECT",
                                "properties": {"city_name": {"type": "STRING"}},
                            },
                        }
                    ]
                }
            ],
        },
    )


@pytest.mark.django_db
def test_python_snippets_compile_and_carry_the_config_exactly(hostile_profile):
    code = snippets(profile_guide(profile=hostile_profile, portal_url=PORTAL))

    for key in ("python-backend", "python-client"):
        compile(code[key], f"<{key}>", "exec")
    tree = ast.parse(code["python-client"])
    assigned = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant | ast.Dict)
    }
    assert assigned["MODEL"] == "gemini-2.0-flash-live-001"
    assert assigned["CONFIG"] == hostile_profile.config  # the SDK's own snake_case, verbatim
    tools = assigned["CONFIG"]["tools"][0]["function_declarations"][0]
    assert "city_name" in tools["parameters"]["properties"]  # free-form keys keep their case


@pytest.mark.django_db
def test_js_snippet_is_valid_javascript_with_the_config_as_the_sdk_spells_it(
    hostile_profile, tmp_path, node
):
    js = snippets(profile_guide(profile=hostile_profile, portal_url=PORTAL))["js-browser"]

    checked = node_check(node, tmp_path, js)

    assert checked.returncode == 0, checked.stderr
    assert "systemInstruction: " + json.dumps(HOSTILE) in js
    assert "functionDeclarations: [" in js
    assert "city_name: {" in js  # a parameter's name, not an SDK field: not camelCased


def test_node_check_notices_broken_javascript(tmp_path, node):
    """The JS check has teeth."""
    assert node_check(node, tmp_path, "const session = await ai.live.connect({ model: ;").returncode


def test_curl_snippet_quotes_for_the_shell():
    curl = curl_snippet(tokens_url="https://ephemera.example.com/it's $HOME", slug="a-b")

    argv = shlex.split(curl.replace("\\\n", " "))

    assert argv == [
        "curl",
        "-sS",
        "--fail-with-body",  # a refusal: curl names the status, prints the body, exits 22
        "-X",
        "POST",
        "https://ephemera.example.com/it's $HOME",  # not expanded
        "-H",
        f"Authorization: Bearer ${CLIENT_KEY_ENV}",  # shlex does not expand; bash will
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"profile": "a-b", "end_user": "user-123"}',
    ]
    assert f'"Authorization: Bearer ${CLIENT_KEY_ENV}"' in curl  # double quotes: expanded


# --- the backend snippets work against a real portal -----------------------------------------


def run_snippet(command: list[str], raw_key: str) -> subprocess.CompletedProcess:
    env = {**os.environ, CLIENT_KEY_ENV: raw_key}
    return subprocess.run(  # noqa: S603 (a snippet generated by this test)
        command, capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.mark.django_db(transaction=True)
def test_python_backend_snippet_gets_a_token_from_a_live_portal(two_orgs, live_portal, tmp_path):
    alpha, _ = two_orgs
    guide = profile_guide(profile=alpha.profile, portal_url=live_portal + "/")
    script = tmp_path / "backend.py"
    script.write_text(snippets(guide)["python-backend"])

    ran = run_snippet([sys.executable, str(script)], alpha.raw_client_key)

    assert ran.returncode == 0, ran.stderr
    first, lock = ran.stdout.splitlines()
    token, until, expire_time = first.split()
    assert token.startswith("auth_tokens/")
    assert until == "until" and expire_time
    assert lock.startswith("lock: whole_setup ") and "generationConfig" in lock
    grant = TokenGrant.objects.get(organization=alpha.organization)
    assert (grant.outcome, grant.profile_slug, grant.end_user) == (
        "issued",
        "alpha-voice",
        EXAMPLE_END_USER,
    )


@pytest.mark.django_db(transaction=True)
def test_python_backend_snippet_shows_the_error_code(two_orgs, live_portal, tmp_path):
    alpha, bravo = two_orgs
    guide = profile_guide(profile=alpha.profile, portal_url=live_portal + "/")
    script = tmp_path / "backend.py"
    script.write_text(snippets(guide)["python-backend"])

    ran = run_snippet([sys.executable, str(script)], bravo.raw_client_key)  # Bravo's key

    assert ran.returncode == 1
    assert ran.stderr.startswith("No token: [profile_not_found 404] ")
    assert "Traceback" not in ran.stderr
    assert ran.stdout == ""


@pytest.mark.django_db(transaction=True)
def test_python_backend_snippet_says_when_to_retry_a_quota(two_orgs, live_portal, tmp_path):
    alpha, _ = two_orgs
    policy_services.quota_update(  # an hour's wait: longer than the library waits by itself
        organization=alpha.organization,
        quota=alpha.quota,
        actor=alpha.owner,
        window="hour",
        limit=1,
    )
    guide = profile_guide(profile=alpha.profile, portal_url=live_portal + "/")
    script = tmp_path / "backend.py"
    script.write_text(snippets(guide)["python-backend"])
    well_inside_window(3600, room=120)  # near the hour's end the library would wait it out
    assert run_snippet([sys.executable, str(script)], alpha.raw_client_key).returncode == 0

    ran = run_snippet([sys.executable, str(script)], alpha.raw_client_key)

    assert ran.returncode == 1
    assert ran.stderr.startswith("No token, retry in ")
    assert "[quota_exceeded 429]" in ran.stderr


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.django_db(transaction=True)
def test_curl_snippet_gets_a_token_from_a_live_portal(two_orgs, live_portal):
    alpha, _ = two_orgs
    guide = profile_guide(profile=alpha.profile, portal_url=live_portal + "/")

    ran = run_snippet([shutil.which("bash"), "-c", snippets(guide)["curl"]], alpha.raw_client_key)

    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert answer["token"].startswith("auth_tokens/")
    assert answer["profile"] == "alpha-voice"
    assert answer["sandbox"] is True


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.django_db(transaction=True)
def test_curl_snippet_shows_a_refusal_and_fails(two_orgs, live_portal):
    alpha, bravo = two_orgs
    guide = profile_guide(profile=alpha.profile, portal_url=live_portal + "/")

    ran = run_snippet([shutil.which("bash"), "-c", snippets(guide)["curl"]], bravo.raw_client_key)

    assert ran.returncode == 22  # curl's "HTTP error": a script using it stops
    assert "404" in ran.stderr
    assert json.loads(ran.stdout)["error"]["code"] == "profile_not_found"


# --- the page in the admin ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN, Role.OWNER])
def test_the_guide_page_shows_escaped_snippets_to_auditors_and_up(client, two_orgs, role):
    alpha, _ = two_orgs
    client.force_login(alpha.users[role])

    response = client.get(guide_url(alpha.profile))

    assert response.status_code == 200
    page = response.content.decode()
    assert "http://testserver/api/v1/tokens" in page  # the portal's address, from the request
    assert 'id="snippet-python-backend"' in page
    assert 'data-copy-target="snippet-curl"' in page
    assert "Bearer $EPHEMERA_CLIENT_KEY" in page
    assert "&quot;alpha-voice&quot;" in page  # the snippets are escaped, not markup
    assert "Alpha web" in page  # the app whose key to use
    assert alpha.raw_client_key not in page
    assert "bravo" not in page.lower()
    assert "<script>" not in page  # CSP: scripts come from static files only
    assert response.context["guide"].portal_url == "http://testserver/"


@pytest.mark.django_db
def test_hostile_text_stays_text_on_the_page(client, two_orgs, hostile_profile):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])

    page = client.get(guide_url(hostile_profile)).content.decode()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;/code&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.django_db
def test_the_profile_page_links_its_guide(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])

    page = client.get(
        reverse("admin:policies_liveconstraintprofile_change", args=[alpha.profile.pk])
    ).content.decode()

    assert f'href="{guide_url(alpha.profile)}"' in page


@pytest.mark.django_db
def test_a_profile_no_app_may_use_says_so(client, two_orgs):
    alpha, _ = two_orgs
    lonely = policy_services.profile_create(
        organization=alpha.organization,
        actor=alpha.owner,
        slug="alpha-lonely",
        name="Alpha lonely",
        model="gemini-2.0-flash-live-001",
        config={},
    )
    client.force_login(alpha.users[Role.ADMIN])

    page = client.get(guide_url(lonely)).content.decode()

    assert "No client app may use this profile yet" in page
    assert "Alpha web" not in page


@pytest.mark.django_db
def test_members_and_other_organisations_do_not_get_the_guide(client, two_orgs):
    alpha, bravo = two_orgs
    client.force_login(alpha.users[Role.MEMBER])
    assert client.get(guide_url(alpha.profile)).status_code == 302  # to the admin login

    client.force_login(alpha.users[Role.ADMIN])
    response = client.get(guide_url(bravo.profile), follow=True)

    assert response.redirect_chain[-1][0] == reverse("admin:index")
    assert "doesn’t exist" in response.content.decode()
    assert "bravo-voice" not in response.content.decode()
