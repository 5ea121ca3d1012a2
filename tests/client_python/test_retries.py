"""The client's reading of answers the live portal cannot be made to give on demand (an HTML
page, an unknown code, a 405, a dropped connection), and its retry timing, against a local
httpx.MockTransport with a fake clock. No database, no server."""

import json
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from ephemera_client import (
    USER_AGENT,
    AsyncEphemeraClient,
    EphemeraClient,
    EphemeraConnectionError,
    EphemeraError,
    IssuedToken,
    MethodNotAllowed,
    NotFound,
    Profile,
    QuotaExceeded,
    UnexpectedResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

KEY = "eph_Pref1234_" + "s" * 40
BASE = "https://portal.test"
TOKEN = {
    "token": "auth_tokens/abc",
    "expire_time": "2026-12-06T15:00:00Z",
    "new_session_expire_time": "2026-12-06T14:31:00+00:00",
    "uses": 1,
    "profile": "voice",
    "model": "gemini-live",
    "lock": "fields",
    "locked_fields": ["generationConfig.temperature"],
    "config": {"temperature": 0.2},
    "grant_id": "17",
    "sandbox": False,
}


def error(status, code, headers=None, **extra) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened", **extra}}
    return httpx.Response(status, json=body, headers={"X-Request-ID": "req-1", **(headers or {})})


class Script:
    """A MockTransport handler answering from a list, recording each request."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def client(fake_clock):
    """``client(*answers, **options)``: a client whose transport plays ``answers`` in turn
    (a response or an exception each); its random jitter is always 1."""

    def make(*answers, **options):
        script = Script(*answers)
        http = httpx.Client(transport=httpx.MockTransport(script))
        made = EphemeraClient(
            BASE, KEY, http_client=http, _sleep=fake_clock, _random=lambda: 1.0, **options
        )
        made.sent = script.requests
        return made

    return make


def test_a_token_is_read_and_newer_fields_are_ignored(client):
    answer = httpx.Response(201, json={**TOKEN, "a_future_field": {"x": 1}})
    issued = client(answer).token("voice", "user-1", new_session_seconds=60)

    assert issued == IssuedToken(
        token="auth_tokens/abc",
        expire_time=datetime(2026, 12, 6, 15, 0, tzinfo=UTC),
        new_session_expire_time=datetime(2026, 12, 6, 14, 31, tzinfo=UTC),
        uses=1,
        profile="voice",
        model="gemini-live",
        lock="fields",
        locked_fields=["generationConfig.temperature"],
        config={"temperature": 0.2},
        grant_id="17",
        sandbox=False,
    )
    assert issued.expire_time.utcoffset().total_seconds() == 0
    assert "auth_tokens/abc" not in repr(issued)  # a bearer credential, kept out of logs


def test_an_older_server_without_lock_and_config_still_reads(client):
    older = {k: v for k, v in TOKEN.items() if k not in ("lock", "locked_fields", "config")}
    issued = client(httpx.Response(201, json=older)).token("voice")

    assert (issued.lock, issued.locked_fields, issued.config) == ("", [], {})


def test_the_request_carries_the_key_the_user_agent_and_only_given_fields(client):
    made = client(httpx.Response(201, json=TOKEN))
    made.token("voice", uses=0)

    [request] = made.sent
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/api/v1/tokens")
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"profile": "voice", "uses": 0}


def test_profiles_are_read_tolerantly(client):
    listed = {
        "slug": "voice",
        "name": "Voice",
        "description": "",
        "model": "gemini-live",
        "uses": 1,
        "expire_seconds": 1800,
        "new_session_seconds": 60,
        "lock": "whole_setup",
        "locked_fields": ["model"],
        "config": {},
        "added_later": True,
    }
    made = client(httpx.Response(200, json=[listed]))

    assert made.profiles() == [Profile(**{k: v for k, v in listed.items() if k != "added_later"})]
    assert made.sent[0].method == "GET"


@pytest.mark.parametrize(
    ("answer", "kind", "code", "status"),
    [
        (error(404, "not_found"), NotFound, "not_found", 404),
        (error(405, "method_not_allowed"), MethodNotAllowed, "method_not_allowed", 405),
        (error(418, "brand_new_code"), EphemeraError, "brand_new_code", 418),
        (httpx.Response(404, html="<h1>Not Found</h1>"), UnexpectedResponse, "", 404),
        (httpx.Response(405, text="Method Not Allowed"), UnexpectedResponse, "", 405),
        (httpx.Response(502, json={"message": "bad gateway"}), UnexpectedResponse, "", 502),
        (
            httpx.Response(301, headers={"Location": "https://elsewhere.test/"}),
            UnexpectedResponse,
            "",
            301,
        ),
    ],
    ids=["not-found", "405", "unknown-code", "html-404", "text-405", "foreign-json", "redirect"],
)
def test_answers_map_to_their_error_and_are_not_retried(
    client, fake_clock, answer, kind, code, status
):
    with pytest.raises(EphemeraError) as raised:
        client(answer).token("voice")

    assert type(raised.value) is kind
    assert (raised.value.code, raised.value.status) == (code, status)
    assert fake_clock.slept == []


def test_a_redirect_is_not_followed_and_says_so(client):
    made = client(httpx.Response(301, headers={"Location": "https://elsewhere.test/"}))
    with pytest.raises(UnexpectedResponse, match=r"redirect to 'https://elsewhere\.test/'"):
        made.token("voice")
    assert len(made.sent) == 1


def test_a_success_with_an_unreadable_body_is_unexpected(client):
    with pytest.raises(UnexpectedResponse) as raised:
        client(httpx.Response(201, text="<html>ok</html>")).token("voice")
    assert raised.value.status == 201
    with pytest.raises(UnexpectedResponse, match="token"):
        client(httpx.Response(201, json={"uses": 1})).token("voice")


def test_a_503_then_a_201_sleeps_once_retry_after_plus_jitter(client, fake_clock):
    made = client(
        error(503, "upstream_unavailable", {"Retry-After": "5"}), httpx.Response(201, json=TOKEN)
    )
    issued = made.token("voice")

    assert issued.token == "auth_tokens/abc"
    assert fake_clock.slept == [5.5]  # Retry-After, plus the first retry's jitter (0.5 s × 1)
    assert len(made.sent) == 2


def test_the_wait_is_capped(client, fake_clock):
    made = client(
        error(429, "quota_exceeded", {"Retry-After": "10"}, limit="app per minute"),
        httpx.Response(201, json=TOKEN),
        max_retry_wait=10,
    )
    made.token("voice")

    assert fake_clock.slept == [10]


def test_retry_after_beyond_the_cap_raises_at_once(client, fake_clock):
    made = client(
        error(429, "quota_exceeded", {"Retry-After": "3600"}, limit="end user per hour"),
        max_retry_wait=30,
    )
    with pytest.raises(QuotaExceeded) as raised:
        made.token("voice")

    assert (raised.value.retry_after, raised.value.limit) == (3600, "end user per hour")
    assert raised.value.request_id == "req-1"
    assert fake_clock.slept == []


@pytest.mark.parametrize("zone", ["GMT", "+0000", "-0000"])  # -0000: a naive datetime
def test_retry_after_as_an_http_date_is_read_in_any_spelling_of_utc(client, fake_clock, zone):
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    stamp = in_an_hour.strftime(f"%a, %d %b %Y %H:%M:%S {zone}")
    made = client(error(429, "quota_exceeded", {"Retry-After": stamp}, limit="app per hour"))

    with pytest.raises(QuotaExceeded) as raised:
        made.token("voice")

    assert 3500 < raised.value.retry_after <= 3600
    assert fake_clock.slept == []


def test_retries_stop_at_max_retries_with_growing_jitter(client, fake_clock):
    busy = error(503, "upstream_unavailable", {"Retry-After": "1"})
    made = client(busy, busy, busy, max_retries=2)
    with pytest.raises(UpstreamUnavailable):
        made.token("voice")

    assert fake_clock.slept == [1.5, 2.0]
    assert len(made.sent) == 3


def test_an_unknown_code_is_retried_by_its_status(client, fake_clock):
    made = client(error(503, "some_future_outage"), httpx.Response(201, json=TOKEN))
    made.token("voice")

    assert fake_clock.slept == [0.5]  # no Retry-After: the jitter alone


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (error(502, "upstream_error"), UpstreamError),
        (error(504, "upstream_timeout"), UpstreamTimeout),
    ],
)
def test_502_and_504_are_never_retried(client, fake_clock, answer, kind):
    made = client(answer, httpx.Response(201, json=TOKEN))
    with pytest.raises(kind):
        made.token("voice")

    assert fake_clock.slept == []
    assert len(made.sent) == 1


def test_a_failure_to_connect_is_retried(client, fake_clock):
    made = client(httpx.ConnectError("refused"), httpx.Response(201, json=TOKEN))
    made.token("voice")

    assert len(fake_clock.slept) == 1


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped"), httpx.ReadError("reset")],
    ids=["read-timeout", "dropped", "reset"],
)
def test_a_failure_after_sending_is_not_retried(client, fake_clock, failure):
    """The portal may have minted a token for it: a retry would spend the quota again."""
    made = client(failure, httpx.Response(201, json=TOKEN))
    with pytest.raises(EphemeraConnectionError, match="after the request was sent") as raised:
        made.token("voice")

    assert raised.value.__cause__ is failure
    assert fake_clock.slept == []


def test_the_library_logs_without_the_key(client, fake_clock, caplog):
    caplog.set_level(logging.DEBUG)
    made = client(error(503, "upstream_unavailable", {"Retry-After": "2"}), error(400, "x"))
    with pytest.raises(EphemeraError) as raised:
        made.token("voice")

    messages = [
        record.getMessage() for record in caplog.records if record.name == "ephemera_client"
    ]
    assert messages == [
        "POST /api/v1/tokens -> 503 (request id req-1)",
        "POST /api/v1/tokens: [upstream_unavailable 503] upstream_unavailable happened "
        "(request id req-1); retrying in 2.50 s",
        "POST /api/v1/tokens -> 400 (request id req-1)",
    ]
    secret = KEY.rsplit("_", 1)[1]
    assert secret not in caplog.text
    assert secret not in str(raised.value) + repr(raised.value)
    assert repr(made) == "EphemeraClient(base_url='https://portal.test', key='eph_Pref1234_****')"


def test_an_empty_key_is_refused():
    with pytest.raises(ValueError, match="client key"):
        EphemeraClient(BASE, "")


def test_a_client_closes_only_its_own_pool():
    with EphemeraClient(BASE, KEY) as own:
        pool = own._http
    assert pool.is_closed
    theirs = httpx.Client()
    with EphemeraClient(BASE, KEY, http_client=theirs):
        pass
    assert not theirs.is_closed
    theirs.close()


@pytest.mark.asyncio
async def test_the_async_client_retries_the_same_way(fake_clock):
    script = Script(
        error(503, "quota_backend_unavailable", {"Retry-After": "5"}),
        httpx.Response(201, json=TOKEN),
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(script))
    async with AsyncEphemeraClient(
        BASE, KEY, http_client=http, _sleep=fake_clock.asleep, _random=lambda: 0.0
    ) as made:
        issued = await made.token("voice")
        assert "s" * 40 not in repr(made)

    assert issued.token == "auth_tokens/abc"
    assert fake_clock.slept == [5.0]
    assert not http.is_closed
    await http.aclose()
