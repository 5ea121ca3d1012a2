"""The answer carries the truth about locks, and the OpenAPI documents itself (issue 20).

docs/adr/0020-contract-lock-and-config-in-answers.md.
"""

import json

import jsonschema_rs
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from google.genai import types

from apps.clients import services as client_services
from apps.issuance.api import api as ninja_api
from apps.issuance.contract import ERROR_CODES
from apps.issuance.sandbox import Faults
from apps.policies import selectors as policy_selectors
from apps.policies import services as policy_services
from apps.policies.live_schema import (
    lock_of,
    locked_fields,
    setup_field_names,
    token_config,
    wire_preview,
)
from apps.policies.models import LockMode
from tests.issuance.conftest import bearer, one_token_per_end_user_per_hour

TOKENS = "/api/v1/tokens"
PROFILES = "/api/v1/profiles"
FIELDS_CONFIG = {"response_modalities": ["TEXT"], "temperature": 0.4}
FIELDS_MASK = [
    "model",
    "generationConfig.responseModalities",
    "generationConfig.temperature",
    "tools",
]


async def issue(api, raw_key, **body):
    return await api.post(
        TOKENS, json.dumps(body), content_type="application/json", headers=bearer(raw_key)
    )


def add_profile(world, slug: str, **fields):
    """A profile Alpha's web app may use, written through the services."""
    profile = policy_services.profile_create(
        organization=world.organization,
        actor=world.owner,
        slug=slug,
        name=slug.title(),
        model="gemini-2.0-flash-live-001",
        **fields,
    )
    client_services.client_app_update(
        organization=world.organization,
        client_app=world.client_app,
        actor=world.owner,
        allowed_profiles=[*world.client_app.allowed_profiles.all(), profile],
    )
    return profile


def fields_profile(world):
    return add_profile(
        world,
        "alpha-text",
        config=FIELDS_CONFIG,
        lock_mode=LockMode.FIELDS_SET_PLUS,
        lock_additional_fields=["tools"],
    )


# --- the token's answer ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_whole_setup_token_says_every_setup_field_is_locked(api, two_orgs):
    """Google replaces the client's setup: the `tools` a client sends do not survive."""
    alpha, _ = two_orgs

    response = await issue(api, alpha.raw_client_key, profile="alpha-voice")

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["lock"] == "whole_setup"
    for name in ("tools", "outputAudioTranscription", "realtimeInputConfig", "model"):
        assert name in data["locked_fields"]
    assert data["config"] == {"response_modalities": ["AUDIO"]}  # as the Python SDK takes it


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_fields_token_locks_exactly_its_mask(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    await sync_to_async(fields_profile)(alpha)

    response = await issue(api, alpha.raw_client_key, profile="alpha-text")

    assert response.status_code == 201, response.content
    data = response.json()
    (received,) = sandbox.state.received
    assert data["lock"] == "fields"
    assert data["locked_fields"] == FIELDS_MASK
    assert data["locked_fields"] == received["body"]["fieldMask"].split(",")
    assert data["config"] == FIELDS_CONFIG


# --- GET /api/v1/profiles -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_profiles_carry_config_lock_and_locked_fields(api, two_orgs):
    alpha, _ = two_orgs
    await sync_to_async(fields_profile)(alpha)
    await sync_to_async(add_profile)(alpha, "alpha-open", lock_mode=LockMode.FIELDS_SET)

    response = await api.get(PROFILES, headers=bearer(alpha.raw_client_key))

    assert response.status_code == 200, response.content
    by_slug = {profile["slug"]: profile for profile in response.json()}
    voice, text, open_ = by_slug["alpha-voice"], by_slug["alpha-text"], by_slug["alpha-open"]
    assert voice["config"]["response_modalities"] == ["AUDIO"]
    assert voice["lock"] == "whole_setup"
    assert voice["locked_fields"] == list(setup_field_names())
    assert "tools" in voice["locked_fields"]
    assert (text["lock"], text["locked_fields"], text["config"]) == (
        "fields",
        FIELDS_MASK,
        FIELDS_CONFIG,
    )
    assert (open_["lock"], open_["locked_fields"], open_["config"]) == ("fields", ["model"], {})


@pytest.mark.django_db(transaction=True)
def test_a_profile_the_sdk_no_longer_accepts_is_left_out_of_profiles(client, two_orgs):
    alpha, _ = two_orgs
    fields_profile(alpha)
    stale = alpha.profile
    type(stale).objects.filter(pk=stale.pk).update(config={"no_such_setting": 1})  # an old row

    response = client.get(PROFILES, headers=bearer(alpha.raw_client_key))

    assert response.status_code == 200
    assert [profile["slug"] for profile in response.json()] == ["alpha-text"]


@pytest.mark.django_db(transaction=True)
def test_profiles_cost_the_same_queries_however_many_and_preview_each_version_once(
    client, two_orgs
):
    alpha, _ = two_orgs
    headers = bearer(alpha.raw_client_key)
    with CaptureQueriesContext(connection) as one:
        assert client.get(PROFILES, headers=headers).status_code == 200
    fields_profile(alpha)
    add_profile(alpha, "alpha-open", lock_mode=LockMode.FIELDS_SET)
    client.get(PROFILES, headers=headers)
    previews = policy_selectors._profile_lock.cache_info().misses

    with CaptureQueriesContext(connection) as three:
        listed = client.get(PROFILES, headers=headers).json()

    assert len(listed) == 3
    assert len(three.captured_queries) == len(one.captured_queries)
    assert policy_selectors._profile_lock.cache_info().misses == previews  # all remembered
    profile = alpha.profile
    policy_services.profile_update(
        organization=alpha.organization,
        profile=profile,
        actor=alpha.owner,
        lock_mode=LockMode.FIELDS_SET,
    )
    changed = {item["slug"]: item for item in client.get(PROFILES, headers=headers).json()}
    assert changed["alpha-voice"]["lock"] == "fields"  # a new version is previewed afresh
    assert changed["alpha-voice"]["locked_fields"] == [
        "model",
        "generationConfig.responseModalities",
    ]


# --- what a body locks ----------------------------------------------------------------------


def test_a_body_without_a_setup_locks_nothing():
    assert lock_of({"uses": 1}) == "fields"
    assert locked_fields({"uses": 1}) == []
    assert locked_fields(None) == []


def test_the_setup_fields_are_every_field_the_sdk_can_put_in_a_setup():
    """Read off the SDK's models, checked against what its converter really writes."""
    names = set(setup_field_names())
    assert {field.alias for field in types.LiveClientSetup.model_fields.values()} <= names
    stamp = "2030-01-01T00:00:00Z"
    full = {
        "response_modalities": ["AUDIO"],
        "system_instruction": "Be brief.",
        "tools": [{"google_search": {}}],
        "session_resumption": {},
        "context_window_compression": {"sliding_window": {}},
        "input_audio_transcription": {},
        "output_audio_transcription": {},
        "realtime_input_config": {"automatic_activity_detection": {"disabled": True}},
        "proactivity": {"proactive_audio": True},
        "history_config": {},
        "avatar_config": {},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "labels": {"team": "support"},
    }
    preview = wire_preview(
        token_config(
            model="gemini-2.0-flash-live-001",
            config=full,
            lock_additional_fields=None,
            uses=1,
            expire_time=stamp,
            new_session_expire_time=stamp,
        )
    )

    assert set(preview.body["bidiGenerateContentSetup"]) <= names
    assert preview.locked_fields == sorted(names)
    assert preview.set_fields == sorted(preview.body["bidiGenerateContentSetup"])


# --- the OpenAPI document -------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(json.dumps(ninja_api.get_openapi_schema(path_prefix="/api/v1"), default=str))


def _properties(schema: dict, where: str):
    for name, prop in (schema.get("properties") or {}).items():
        yield f"{where}.{name}", prop


def test_the_document_has_a_title_and_a_version(document):
    assert document["info"]["title"] == "Ephemera API"
    assert document["info"]["version"] == "1.1.0"
    assert "1.1.0" in document["info"]["description"]


def test_every_field_has_a_description_and_an_example(document):
    fields = []
    for name, schema in document["components"]["schemas"].items():
        fields += _properties(schema, name)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary") and operation.get("description"), where
            body = operation.get("requestBody", {}).get("content", {})
            for content in body.values():
                fields += _properties(content["schema"], where)
            for parameter in operation.get("parameters", []):
                fields.append((f"{where} ?{parameter['name']}", parameter["schema"]))
                assert parameter.get("description"), parameter["name"]

    assert len(fields) > 40
    missing = [
        where
        for where, prop in fields
        if not prop.get("description") or not (prop.get("examples") or "example" in prop)
    ]
    assert missing == []


def test_retrying_statuses_declare_retry_after(document):
    declared = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status in ("429", "503"):
                if status in operation["responses"]:
                    header = operation["responses"][status]["headers"]["Retry-After"]
                    assert header["required"] is True
                    assert header["schema"]["type"] == "integer"
                    declared.append((method, path, status))
    assert ("post", "/api/v1/tokens", "429") in declared
    assert ("post", "/api/v1/tokens", "503") in declared


def test_every_error_code_is_documented_with_its_status_and_meaning(document):
    description = document["info"]["description"]
    responses = {
        status: answer
        for item in document["paths"].values()
        for operation in item.values()
        for status, answer in operation["responses"].items()
    }
    schemas = document["components"]["schemas"]
    for error in ERROR_CODES:
        assert f"| {error.status} | `{error.code}` | {error.meaning} |" in description
        answer = responses.get(str(error.status))
        if answer is None:  # 404 not_found and 405: no operation answers them, the API does
            assert error.code in ("not_found", "method_not_allowed")
            continue
        if error.code == "not_found":
            continue  # the tokens' 404 is profile_not_found only
        assert f"`{error.code}`: {error.meaning}" in answer["description"]
        body = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        body = schemas[body]["properties"]["error"]["$ref"].rsplit("/", 1)[1]
        assert error.code in schemas[body]["properties"]["code"]["enum"]
    assert "limit" in schemas["Error429Body"]["required"]
    assert "field" in schemas["Error400Body"]["properties"]


# --- the document against real answers -------------------------------------------------------


def _validator(document: dict, answer: dict) -> jsonschema_rs.Validator:
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    return jsonschema_rs.validator_for({"$ref": ref, "components": document["components"]})


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_429_and_a_503_answer_as_documented(api, sandbox, two_orgs, document, clock):
    alpha, _ = two_orgs
    await one_token_per_end_user_per_hour(alpha.organization)
    responses = document["paths"][TOKENS]["post"]["responses"]

    assert (
        await issue(api, alpha.raw_client_key, profile="alpha-voice", end_user="u")
    ).status_code == 201
    quota = await issue(api, alpha.raw_client_key, profile="alpha-voice", end_user="u")
    sandbox.state.faults = Faults(status=503)
    upstream = await issue(api, alpha.raw_client_key, profile="alpha-voice", end_user="v")

    for response, status in ((quota, 429), (upstream, 503)):
        assert response.status_code == status
        assert int(response["Retry-After"]) >= 1
        assert "Retry-After" in responses[str(status)]["headers"]  # and the document says so
        _validator(document, responses[str(status)]).validate(response.json())
    assert quota.json()["error"]["limit"]
