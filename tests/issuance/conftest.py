import pytest
from django.test import AsyncClient

from apps.issuance import gateway
from apps.issuance.sandbox import Faults, SandboxServer


@pytest.fixture(scope="session")
def sandbox_server():
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server, settings):
    """The sandbox upstream, clean, with the portal pointed at it."""
    settings.GEMINI_BASE_URL = sandbox_server.url
    settings.GEMINI_TIMEOUT_MS = 2000
    sandbox_server.state.received.clear()
    sandbox_server.state.faults = Faults()
    sandbox_server.state.calls = 0
    gateway.clients.clear()
    yield sandbox_server
    gateway.clients.clear()


@pytest.fixture
def api(sandbox):
    return AsyncClient()


def bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}
