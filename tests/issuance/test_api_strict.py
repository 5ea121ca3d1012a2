"""POST /api/v1/tokens refuses what cannot be read one way or stored as sent: 400, audited,
Google never asked, the same on both paths (Django's and the ASGI short path)."""

import json

import pytest

from apps.audit.models import TokenGrant
from tests.issuance.conftest import bearer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def post_raw(api, raw_key: str, raw: bytes, content_type="application/json"):
    return await api.post("/api/v1/tokens", raw, content_type=content_type, headers=bearer(raw_key))


async def refused_and_audited(response, organization, sandbox) -> dict:
    """The 400's error body, once its audit row and Google's silence are checked."""
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{error['field']}: ")
    assert "no-store" in response["Cache-Control"]
    grant = await TokenGrant.objects.aget(organization=organization)
    assert (grant.outcome, grant.error_code) == ("denied_policy", "invalid_request")
    assert grant.detail == error["message"]
    assert grant.end_user == "" and "\x00" not in grant.detail
    assert not sandbox.state.received
    return error


@pytest.mark.parametrize("field", ["end_user", "profile"])
@pytest.mark.parametrize("spelling", ["escaped", "raw"])
async def test_a_nul_in_end_user_or_profile_is_refused_and_audited(
    api, sandbox, two_orgs, field, spelling
):
    """It was a 500 with no audit row on PostgreSQL (which cannot store NUL) and stored
    as sent on SQLite."""
    alpha, _ = two_orgs
    body = {"profile": "alpha-voice", "end_user": "eve", field: "eve\x00admin"}
    raw = json.dumps(body).encode()
    if spelling == "raw":
        raw = raw.replace(b"\\u0000", b"\x00")

    response = await post_raw(api, alpha.raw_client_key, raw)

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert error["field"] == field
    assert "U+0000" in error["message"]


async def test_a_duplicate_key_is_refused_not_read_as_its_last_value(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    raw = b'{"profile": "alpha-voice", "end_user": "eve", "end_user": "mallory"}'

    response = await post_raw(api, alpha.raw_client_key, raw)

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert error["field"] == "end_user"
    assert "more than once" in error["message"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
async def test_a_utf16_body_is_refused(api, sandbox, two_orgs, encoding):
    alpha, _ = two_orgs
    raw = json.dumps({"profile": "alpha-voice"}).encode(encoding)

    response = await post_raw(api, alpha.raw_client_key, raw)

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert (error["field"], "UTF-16" in error["message"]) == ("body", True)


async def test_a_charset_other_than_utf8_is_refused(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    raw = json.dumps({"profile": "alpha-voice"}).encode()

    response = await post_raw(
        api, alpha.raw_client_key, raw, content_type="application/json; charset=latin-1"
    )

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert error["field"] == "Content-Type"


async def test_a_control_character_in_a_key_is_refused_by_its_path(api, sandbox, two_orgs):
    alpha, _ = two_orgs

    response = await post_raw(api, alpha.raw_client_key, b'{"profile\\u001f": "alpha-voice"}')

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert error["field"] == "profile\\u001f"


async def test_a_long_unknown_key_is_named_cut_short_not_echoed_whole(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    body = {"profile": "alpha-voice", "x" * 10_000: 1}

    response = await post_raw(api, alpha.raw_client_key, json.dumps(body).encode())

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert error["field"] == "x" * 64 + "…"
    assert error["message"] == error["field"] + ": is not allowed"


async def test_a_lone_surrogate_is_refused(api, sandbox, two_orgs):
    alpha, _ = two_orgs

    response = await post_raw(
        api, alpha.raw_client_key, b'{"profile": "alpha-voice", "end_user": "\\udead"}'
    )

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert error["field"] == "end_user"


async def test_nesting_5000_deep_is_a_400_not_a_500(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    raw = b'{"profile": "alpha-voice", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"

    response = await post_raw(api, alpha.raw_client_key, raw)

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert "deeper than" in error["message"]


async def test_nan_is_refused(api, sandbox, two_orgs):
    alpha, _ = two_orgs

    response = await post_raw(api, alpha.raw_client_key, b'{"profile": "alpha-voice", "uses": NaN}')

    error = await refused_and_audited(response, alpha.organization, sandbox)
    assert error["field"] == "uses"


async def test_text_beyond_ascii_still_gets_its_token(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    raw = json.dumps({"profile": "alpha-voice", "end_user": "zoë-😀"}, ensure_ascii=False)

    response = await post_raw(api, alpha.raw_client_key, raw.encode())

    assert response.status_code == 201, response.content
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert grant.end_user == "zoë-😀"
