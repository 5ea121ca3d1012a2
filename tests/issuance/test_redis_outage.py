"""Redis stops in the middle of a run: issuance fails closed (503, audited), then recovers."""

import json
import shutil
import socket
import subprocess
import time

import pytest

from apps.audit.models import TokenGrant
from apps.issuance import quotas
from tests.issuance.conftest import bearer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisProcess:
    """A throwaway redis-server of the test's own, so stopping it disturbs nothing else."""

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],  # noqa: S607
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def own_redis(settings):
    server = RedisProcess(_free_port())
    server.start()
    settings.REDIS_URL = f"redis://127.0.0.1:{server.port}/0"
    quotas._engine_for.cache_clear()
    yield server
    if server.process.poll() is None:
        server.stop()
    quotas._engine_for.cache_clear()


async def test_issuance_fails_closed_while_redis_is_down_and_recovers(
    api, sandbox, two_orgs, own_redis
):
    alpha, _ = two_orgs

    async def issue():
        return await api.post(
            "/api/v1/tokens",
            json.dumps({"profile": "alpha-voice"}),
            content_type="application/json",
            headers=bearer(alpha.raw_client_key),
        )

    before = await issue()
    own_redis.stop()
    during = await issue()
    own_redis.start()
    after = await issue()

    assert (before.status_code, during.status_code, after.status_code) == (201, 503, 201)
    assert during.json()["error"]["code"] == "quota_backend_unavailable"
    assert during["Retry-After"] == "5"
    outcomes = [
        outcome
        async for outcome in TokenGrant.objects.filter(organization=alpha.organization)
        .order_by("id")
        .values_list("error_code", flat=True)
    ]
    assert outcomes == ["", "quota_backend_unavailable", ""]
    assert len(sandbox.state.received) == 2  # the refused attempt never reached Google
