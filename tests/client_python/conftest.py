"""The client library against a real portal: the deployed ASGI app under uvicorn, minting
through the sandbox upstream, with two_orgs' data (tests/conftest.py)."""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import TenantWorld
from tests.live import serve_portal


@dataclass
class Portal:
    """A served portal and Alpha, whose client key the tests use."""

    url: str
    alpha: TenantWorld


@pytest.fixture
def portal(sandbox, two_orgs) -> Iterator[Portal]:
    alpha, _ = two_orgs
    with serve_portal() as url:
        yield Portal(url=url, alpha=alpha)


class FakeClock:
    """The client's sleep, recorded instead of slept, with an action to run on each (the
    upstream recovering while the client waits)."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.on_sleep = lambda: None

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.on_sleep()

    async def asleep(self, seconds: float) -> None:
        self(seconds)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
