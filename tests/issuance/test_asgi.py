"""The token endpoint's short path: what it takes, what it hands to Django, and that both
answer alike. (Every API test also runs through it: see the ``api`` fixture.)"""

import asyncio
import json
import threading
import time

import pytest
from django.conf import settings
from django.core.asgi import get_asgi_application

from apps.audit.models import TokenGrant
from apps.issuance.api import MAX_BODY_BYTES
from apps.issuance.asgi import LEFT_OUT, SHORT_CHAIN, TokenEndpointHandler
from apps.issuance.models import ActiveTokenSlot
from apps.issuance.sandbox import Faults
from apps.issuance.store import event_loop, threaded
from tests.issuance.conftest import asgi_request, bearer, until_google_is_asked

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = "/api/v1/tokens"
# Headers whose values differ from one response to the next by design.
PER_RESPONSE = {"x-request-id", "content-length"}


class RecordingDjango:
    """Django's ASGI application, noting which requests reached it."""

    def __init__(self) -> None:
        self.django = get_asgi_application()
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope, receive, send):
        self.seen.append((scope["method"], scope["path"]))
        await self.django(scope, receive, send)


@pytest.fixture
def django_app():
    return RecordingDjango()


@pytest.fixture
def short(django_app):
    return TokenEndpointHandler(django_app)


def token_body(**fields) -> bytes:
    return json.dumps({"profile": "alpha-voice", **fields}).encode()


def json_headers(raw_key: str, **extra) -> dict[str, str]:
    return {**bearer(raw_key), "Content-Type": "application/json", **extra}


@pytest.mark.asyncio
async def test_a_client_key_token_request_never_reaches_django(
    short, django_app, sandbox, two_orgs
):
    alpha, _ = two_orgs

    response = await asgi_request(
        short, "POST", TOKENS, body=token_body(), headers=json_headers(alpha.raw_client_key)
    )

    assert response.status_code == 201, response.text
    assert django_app.seen == []
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert grant.outcome == TokenGrant.Outcome.ISSUED
    assert grant.request_id == response.headers["X-Request-ID"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/api/v1/profiles", "key"),
        ("OPTIONS", TOKENS, "preflight"),
        ("POST", TOKENS, "session"),
        ("POST", TOKENS, "basic"),
        ("POST", TOKENS, "none"),
        ("POST", TOKENS + "/", "key"),
        ("GET", TOKENS, "key"),
    ],
    ids=["profiles", "preflight", "session-cookie", "basic-auth", "no-auth", "other-path", "get"],
)
async def test_everything_else_goes_to_django_as_it_came(
    short, django_app, sandbox, two_orgs, method, path, headers
):
    alpha, _ = two_orgs
    sent = {
        "key": bearer(alpha.raw_client_key),
        "preflight": {
            "Origin": "https://alpha.test",
            "Access-Control-Request-Method": "POST",
        },
        "session": {**bearer(alpha.raw_client_key), "Cookie": f"{settings.SESSION_COOKIE_NAME}=x"},
        "basic": {"Authorization": "Basic YWxwaGE6c2VjcmV0"},
        "none": {},
    }[headers]

    await asgi_request(short, method, path, body=token_body(), headers=sent)

    assert django_app.seen == [(method, path)]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("case", "body", "extra"),
    [
        ("issued", token_body(), {}),
        ("bad-json", b"{nope", {}),
        ("unknown-field", token_body(colour="red"), {}),
        ("unknown-profile", token_body(profile="bravo-voice"), {}),
        ("wrong-key", token_body(), {"Authorization": "Bearer eph_nope"}),
        ("allowed-origin", token_body(), {"Origin": "https://alpha.test"}),
        ("foreign-origin", token_body(), {"Origin": "https://evil.test"}),
        ("wrong-content-type", token_body(), {"Content-Type": "text/plain"}),
    ],
)
async def test_the_short_path_answers_as_django_does(sandbox, two_orgs, case, body, extra):
    """Same status, same body shape, same headers (values too, bar the per-response ones)."""
    alpha, _ = two_orgs
    headers = {**json_headers(alpha.raw_client_key), **extra}
    django = get_asgi_application()

    through_django = await asgi_request(django, "POST", TOKENS, body=body, headers=headers)
    through_short = await asgi_request(
        TokenEndpointHandler(django), "POST", TOKENS, body=body, headers=headers
    )

    assert through_short.status_code == through_django.status_code
    short_json, django_json = through_short.json(), through_django.json()
    if through_django.status_code == 201:
        assert short_json.keys() == django_json.keys()
        assert short_json["locked_fields"] == django_json["locked_fields"]
    else:
        assert short_json == django_json
    assert {
        name: value for name, value in through_short.headers.items() if name not in PER_RESPONSE
    } == {name: value for name, value in through_django.headers.items() if name not in PER_RESPONSE}
    outcomes = [grant.outcome async for grant in TokenGrant.objects.order_by("id")]
    unknown_caller = through_django.status_code == 401
    assert len(outcomes) == (0 if unknown_caller else 2)
    assert len(set(outcomes)) <= 1  # both audited alike


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["short", "django"])
async def test_a_body_sent_without_a_length_is_refused_at_the_cap_and_audited(
    sandbox, two_orgs, path
):
    """Chunked, so no Content-Length to refuse it by: the short path stops reading one byte
    past the cap; Django reads up to its own limit (2.5 MB), and the API still says 400."""
    alpha, _ = two_orgs
    django = get_asgi_application()
    app = TokenEndpointHandler(django) if path == "short" else django
    chunk = b" " * 65536
    chunks_sent = 0

    async def chunks():
        nonlocal chunks_sent
        yield b'{"profile": "alpha-voice", "end_user": "'
        for _ in range(48):  # 3 MiB in all
            chunks_sent += 1
            yield chunk
        yield b'"}'

    response = await asgi_request(
        app, "POST", TOKENS, body=chunks(), headers=json_headers(alpha.raw_client_key)
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"body: is over {MAX_BODY_BYTES} bytes"
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert (grant.outcome, grant.error_code) == (
        TokenGrant.Outcome.DENIED_POLICY,
        "invalid_request",
    )
    assert sandbox.state.received == type(sandbox.state.received)()
    if path == "short":
        assert chunks_sent < 48  # the rest was never buffered


def token_scope(raw_key: str) -> dict:
    """An ASGI scope for a client key's token request, for tests that drive receive/send."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": TOKENS,
        "raw_path": TOKENS.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {raw_key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


class HangingUpClient:
    """The ASGI receive/send of a client that sends a token request, then hangs up on cue."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self._hung_up = asyncio.Event()
        self._body_sent = False

    def request(self, app, raw_key: str) -> asyncio.Future:
        """Start the request on ``app``; it runs until the app is done with it."""
        return asyncio.ensure_future(app(token_scope(raw_key), self.receive, self.send))

    def hang_up(self) -> None:
        self._hung_up.set()

    async def receive(self) -> dict:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": token_body(), "more_body": False}
        await self._hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)


@pytest.mark.asyncio
async def test_a_client_that_hangs_up_gets_its_grant_abandoned_and_refunded(
    short, sandbox, two_orgs
):
    alpha, _ = two_orgs
    sandbox.state.faults = Faults(delay_ms=1500)
    client = HangingUpClient()
    serving = client.request(short, alpha.raw_client_key)
    await until_google_is_asked(sandbox)

    client.hang_up()
    await serving

    assert client.sent == []
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert grant.outcome == TokenGrant.Outcome.ABANDONED
    assert grant.quota_reservation is None
    assert await ActiveTokenSlot.objects.acount() == 0


# Long enough for the server to see a hang-up while a grant commits, even on a busy machine.
HANG_UP_NOTICED = 1.0


@pytest.mark.asyncio
async def test_a_client_that_hangs_up_while_its_grant_is_committed_frees_its_quota_at_once(
    short, sandbox, two_orgs, monkeypatch, issuance_path
):
    """Taking the quota and committing the grant is not stopped midway: the grant is
    abandoned and its quota given back when it is done, not held until reap_pending gives
    up on it."""
    alpha, _ = two_orgs
    committing = threading.Event()
    insert, insert_async = threaded.insert_grant, event_loop._insert_grant

    def slow_insert(grant):
        committing.set()
        time.sleep(HANG_UP_NOTICED)  # the client hangs up meanwhile
        insert(grant)

    async def slow_insert_async(grant):
        committing.set()
        await asyncio.sleep(HANG_UP_NOTICED)
        await insert_async(grant)

    monkeypatch.setattr(threaded, "insert_grant", slow_insert)
    monkeypatch.setattr(event_loop, "_insert_grant", slow_insert_async)
    client = HangingUpClient()
    serving = client.request(short, alpha.raw_client_key)
    while not committing.is_set():
        await asyncio.sleep(0.01)
    client.hang_up()
    await serving

    grant = None
    for _ in range(100):
        grant = await TokenGrant.objects.filter(organization=alpha.organization).afirst()
        if grant is not None and grant.outcome != TokenGrant.Outcome.PENDING:
            break
        await asyncio.sleep(0.05)
    assert client.sent == []
    assert (grant.outcome, grant.error_code) == (TokenGrant.Outcome.ABANDONED, "abandoned")
    assert grant.quota_reservation is None
    assert await ActiveTokenSlot.objects.acount() == 0
    assert not sandbox.state.received  # Google was never asked


@pytest.mark.asyncio
async def test_a_client_that_hangs_up_while_its_request_waits_for_a_database_thread_costs_nothing(
    short, sandbox, two_orgs, settings
):
    settings.ISSUANCE_ON_EVENT_LOOP = False  # the threads' path: a queued step never runs
    alpha, _ = two_orgs
    busy = threading.Event()
    blockers = [threaded._db_threads.submit(busy.wait, 5) for _ in range(64)]  # all taken
    client = HangingUpClient()
    try:
        serving = client.request(short, alpha.raw_client_key)
        await asyncio.sleep(0.2)  # queued behind the blockers
        client.hang_up()
        await serving
    finally:
        busy.set()
        for blocker in blockers:
            await asyncio.wrap_future(blocker)

    await asyncio.sleep(0.2)  # time enough for a step that was wrongly left queued
    assert client.sent == []
    assert await TokenGrant.objects.filter(organization=alpha.organization).acount() == 0
    assert await ActiveTokenSlot.objects.acount() == 0


@pytest.mark.asyncio
async def test_a_client_that_hangs_up_while_its_key_is_looked_up_on_the_loop_costs_nothing(
    short, sandbox, two_orgs, monkeypatch, issuance_path
):
    if issuance_path != "event-loop":
        pytest.skip("the threads' path: see the test above")
    alpha, _ = two_orgs
    looking_up = asyncio.Event()
    lookup = event_loop.EventLoopStore.client_key

    async def slow_lookup(store, raw_key):
        looking_up.set()
        await asyncio.sleep(0.3)
        return await lookup(store, raw_key)

    monkeypatch.setattr(event_loop.EventLoopStore, "client_key", slow_lookup)
    client = HangingUpClient()
    serving = client.request(short, alpha.raw_client_key)
    await looking_up.wait()
    client.hang_up()
    await serving

    await asyncio.sleep(0.5)  # time enough for anything wrongly left running
    assert client.sent == []
    assert await TokenGrant.objects.filter(organization=alpha.organization).acount() == 0
    assert not sandbox.state.received


@pytest.mark.asyncio
async def test_a_foreign_host_is_refused_as_django_refuses_it(short, sandbox, two_orgs):
    alpha, _ = two_orgs
    headers = {**json_headers(alpha.raw_client_key), "Host": "evil.test"}

    response = await asgi_request(short, "POST", TOKENS, body=token_body(), headers=headers)

    assert response.status_code == 400
    assert await TokenGrant.objects.acount() == 0
    assert sandbox.state.received == type(sandbox.state.received)()


@pytest.mark.asyncio
async def test_plain_http_is_redirected_when_tls_is_required(sandbox, two_orgs, settings):
    alpha, _ = two_orgs
    settings.SECURE_SSL_REDIRECT = True

    response = await asgi_request(
        TokenEndpointHandler(get_asgi_application()),
        "POST",
        TOKENS,
        body=token_body(),
        headers=json_headers(alpha.raw_client_key),
    )

    assert response.status_code == 301
    assert response.headers["Location"] == f"https://testserver{TOKENS}"
    assert await TokenGrant.objects.acount() == 0


def test_every_middleware_is_either_run_or_left_out_for_a_reason():
    assert set(settings.MIDDLEWARE) == SHORT_CHAIN.keys() | LEFT_OUT.keys()
    assert not SHORT_CHAIN.keys() & LEFT_OUT.keys()


def test_the_deployed_application_is_the_short_path_in_front_of_django():
    from django.core.handlers.asgi import ASGIHandler

    from portal.asgi import application

    assert isinstance(application, TokenEndpointHandler)
    assert isinstance(application.django, ASGIHandler)
    assert not isinstance(application.django, TokenEndpointHandler)
