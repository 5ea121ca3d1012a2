import asyncio
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from apps.issuance.store import issuance_store
from apps.issuance.store.event_loop import EventLoopStore
from apps.policies import services as policy_services
from apps.policies.models import Quota
from portal.asgi import build_application


@pytest.fixture(params=["threads", "event-loop"])
def issuance_path(request, settings) -> str:
    """A test once per path issuance's database steps can take: in its threads, and on the
    event loop, which exists on PostgreSQL + Redis only (skipped elsewhere)."""
    settings.ISSUANCE_ON_EVENT_LOOP = request.param == "event-loop"
    if settings.ISSUANCE_ON_EVENT_LOOP and not isinstance(issuance_store(), EventLoopStore):
        pytest.skip("issuance runs on the event loop on PostgreSQL + Redis only")
    return request.param


@pytest.fixture(params=["django", "asgi"])
def api(request, sandbox):
    """Each API test twice: through Django's test client, and through the ASGI application
    the server runs, where client-key token requests take the short path."""
    return AsyncClient() if request.param == "django" else AsgiClient()


async def asgi_request(app, method, path, body=b"", headers=None) -> httpx.Response:
    """One request to an ASGI application, in process, from a fixed client address."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.request(method, path, content=body, headers=headers or {})


class AsgiClient:
    """Django's AsyncClient calls (``post``, ``get``, ``options``) against the deployed ASGI
    application, in process, built afresh so that settings fixtures apply."""

    def __init__(self) -> None:
        self.application = build_application()

    async def request(self, method, path, data="", content_type=None, headers=None):
        headers = dict(headers or {})
        if content_type:
            headers["Content-Type"] = content_type
        return AsgiResponse(await asgi_request(self.application, method, path, data, headers))

    async def post(self, path, data="", content_type=None, headers=None):
        return await self.request("POST", path, data, content_type, headers)

    async def get(self, path, headers=None):
        return await self.request("GET", path, headers=headers)

    async def options(self, path, headers=None):
        return await self.request("OPTIONS", path, headers=headers)


class AsgiResponse:
    """An httpx response read the way tests read Django's: ``response["Header"]``."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.content = response.content
        self.headers = response.headers
        self.json = response.json

    def __getitem__(self, header: str) -> str:
        return self.headers[header]

    def __contains__(self, header: str) -> bool:
        return header in self.headers

    def has_header(self, header: str) -> bool:
        return header in self.headers


async def until_google_is_asked(sandbox, timeout: float = 15.0) -> None:
    """Wait until the sandbox has received a mint: a fixed sleep races a slow machine."""
    deadline = time.monotonic() + timeout
    while not sandbox.state.received:
        assert time.monotonic() < deadline, "the sandbox was never asked for a token"
        await asyncio.sleep(0.01)


def bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


async def one_token_per_end_user_per_hour(organization) -> None:
    """A quota an admin could set: each end user gets one token an hour. A test that needs
    its second request refused holds the clock (``clock``): the hour may end between them."""
    await sync_to_async(policy_services.quota_create)(
        organization=organization,
        actor=None,
        scope=Quota.Scope.END_USER,
        window=Quota.Window.HOUR,
        limit=1,
    )
