import asyncio
import runpy
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlparse

import pytest
import requests
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from apps.audit import services as audit_services
from apps.audit.models import AuditSeal, CleanupRun, TokenGrant
from apps.clients import services as client_services
from apps.clients.models import ClientApp, ClientKey
from apps.issuance import quotas
from apps.policies import services as policy_services
from apps.policies.models import LiveConstraintProfile, Quota
from apps.tenants import services as tenant_services
from apps.tenants.models import Domain, GeminiCredential, Invitation, Organization, Role, User
from tests.factories import (
    DomainFactory,
    InvitationFactory,
    MembershipFactory,
    OrganizationFactory,
    TokenGrantFactory,
    UserFactory,
)


@dataclass
class TenantWorld:
    """One organisation with a user in every role, a verified domain and an open invitation."""

    organization: Organization
    users: dict[Role, User] = field(default_factory=dict)
    domain: Domain | None = None
    invitation: Invitation | None = None
    profile: LiveConstraintProfile | None = None
    client_app: ClientApp | None = None
    client_key: ClientKey | None = None
    raw_client_key: str = ""
    quota: Quota | None = None
    credential: GeminiCredential | None = None
    grant: TokenGrant | None = None
    seal: AuditSeal | None = None
    cleanup_run: CleanupRun | None = None

    @property
    def owner(self) -> User:
        return self.users[Role.OWNER]


def make_world(name: str, *, with_audit_trail: bool = False) -> TenantWorld:
    slug = name.lower()
    organization = OrganizationFactory(name=f"{name} Org", slug=slug)
    world = TenantWorld(organization=organization)
    for role in Role:
        user = UserFactory(username=f"{role.label.lower()}@{slug}.test")
        MembershipFactory(organization=organization, user=user, role=role)
        world.users[role] = user
    world.domain = DomainFactory(organization=organization, name=f"{slug}.test")
    world.invitation = InvitationFactory(
        organization=organization, email=f"invitee@{slug}.test", role=Role.ADMIN
    )
    # Policies written through the services, so each leaves its PolicyChange and version.
    world.profile = policy_services.profile_create(
        organization=organization,
        actor=world.owner,
        slug=f"{slug}-voice",
        name=f"{name} voice",
        model="gemini-2.0-flash-live-001",
        config={"response_modalities": ["AUDIO"]},
    )
    world.client_app = client_services.client_app_create(
        organization=organization,
        actor=world.owner,
        name=f"{name} web",
        allowed_profiles=[world.profile],
        allowed_origins=[f"https://{slug}.test"],
    )
    world.client_key, world.raw_client_key = client_services.client_key_create(
        organization=organization, client_app=world.client_app, actor=world.owner, label=slug
    )
    world.quota = policy_services.quota_create(
        organization=organization,
        actor=world.owner,
        scope="client_app",
        client_app=world.client_app,
        window="minute",
        limit=60,
    )
    world.credential = tenant_services.gemini_credential_set(
        organization=organization, api_key=f"{slug}-gemini-key-0000", actor=world.owner
    )
    if with_audit_trail:
        add_audit_trail(world)
    return world


def add_audit_trail(world: TenantWorld) -> None:
    """One issued grant, sealed with the world's policy changes, and a task run."""
    organization, slug = world.organization, world.organization.slug
    world.grant = TokenGrantFactory(
        organization=organization,
        client_app=world.client_app,
        client_key_prefix=world.client_key.prefix,
        profile=world.profile,
        profile_slug=world.profile.slug,
        end_user=f"{slug}-user",
        request_id=f"{slug}-request",
    )
    audit_services.audit_seal_organization(
        organization=organization, now=timezone.now() + timedelta(minutes=2)
    )
    world.seal = AuditSeal.objects.get(organization=organization)
    world.cleanup_run = CleanupRun.objects.create(
        task="seal_audit",
        organization=organization,
        counts={"seals": 1},
        finished_at=timezone.now(),
    )


@pytest.fixture
def two_orgs(db) -> tuple[TenantWorld, TenantWorld]:
    """Alpha and Bravo: everything Bravo owns carries 'bravo' in its name, for leak checks."""
    return make_world("Alpha"), make_world("Bravo")


@pytest.fixture
def operator(db) -> User:
    return UserFactory(username="operator", is_superuser=True, is_staff=True)


@pytest.fixture(scope="session")
def oidc_server():
    """The fake Google: oidc-provider-mock on the port the test settings pointed allauth at."""
    from oidc_provider_mock import run_server_in_thread  # a slow, noisy import: only if used

    port = urlparse(settings.GOOGLE_OAUTH_MOCK_URL).port
    with run_server_in_thread(port=port) as server:
        yield server


class FakeGoogle:
    """Drives a full Google sign-in: our login view, the fake's consent form, our callback."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def sign_in(self, client, *, sub: str, **claims):
        requests.put(f"{self.base_url}/users/{sub}", json=claims, timeout=5).raise_for_status()
        start = client.post("/accounts/google/login/")
        assert start.status_code == 302, start
        authorize_url = start["Location"]
        assert authorize_url.startswith(self.base_url), authorize_url
        consent = requests.post(authorize_url, data={"sub": sub}, allow_redirects=False, timeout=5)
        assert consent.status_code == 302, consent.text
        callback = urlparse(consent.headers["Location"])
        return client.get(f"{callback.path}?{callback.query}")


@pytest.fixture
def fake_google(oidc_server) -> FakeGoogle:
    return FakeGoogle(settings.GOOGLE_OAUTH_MOCK_URL)


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Row ids repeat between tests, and readiness is answered once a second: per-process
    caches must not carry over."""
    from apps.issuance import gateway, policy_cache
    from portal import health

    policy_cache.clear()
    gateway.clients.clear()
    health.readiness_forget()


@pytest.fixture(autouse=True)
def _fresh_redis(settings):
    """Quota counters are keyed by row ids, which repeat between tests: start each clean."""
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture(scope="session", autouse=True)
def _database_like_production(django_db_setup, django_db_blocker):
    """WAL on the SQLite test file, as on the real one; pooled connections closed at the end.

    The pool must be closed before pytest-django drops the PostgreSQL test database.
    """
    from django.db import connection, connections

    if connection.vendor == "sqlite":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
    yield
    if connection.vendor == "postgresql":
        # Async tests' ORM calls ran in asgiref's one sync thread, which still holds a
        # connection from the pool: hand it back, or the test database cannot be dropped.
        asyncio.run(sync_to_async(connections.close_all)())
        connection.close_pool()


def caches_as_deployed(monkeypatch, redis_url: str) -> dict:
    """The CACHES that portal.settings builds for this REDIS_URL, timeouts included."""
    from portal import settings as deployed_settings

    monkeypatch.setenv("REDIS_URL", redis_url)
    return runpy.run_path(deployed_settings.__file__)["CACHES"]


@pytest.fixture
def redis_hung(settings, monkeypatch):
    """The cache as portal.settings builds it, on a server that accepts and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept_and_hold():
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept_and_hold, daemon=True)
    acceptor.start()
    settings.CACHES = caches_as_deployed(
        monkeypatch, f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    )
    yield
    stop.set()
    acceptor.join()
    for connection in held:
        connection.close()
    server.close()


class Clock:
    """``django.utils.timezone.now`` held still and moved by hand: time-bound behaviour
    (windows, once-a-minute writes) tested without sleeping."""

    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def well_inside_window(seconds: int, room: float) -> None:
    """Sleep into the next quota window when fewer than ``room`` seconds are left of this one.

    Windows are fixed (a minute's starts at :00), so requests that must share one straddle its
    edge now and then unless they start early enough in it. For tests whose portal runs on the
    real clock; the rest hold it still with ``clock``."""
    left = seconds - time.time() % seconds
    if left < room:
        time.sleep(left + 0.1)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """Starts at the real time; every ``timezone.now()`` in the process reads it."""
    held = Clock(timezone.now())
    monkeypatch.setattr(timezone, "now", held)
    return held


@pytest.fixture(scope="session")
def sandbox_server():
    """The sandbox upstream (HTTP mint only), one for the session."""
    from apps.issuance.sandbox import SandboxServer

    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server, settings):
    """The sandbox upstream, clean, with the portal pointed at it."""
    from apps.issuance import gateway
    from apps.issuance.sandbox import Faults

    settings.GEMINI_BASE_URL = sandbox_server.url
    settings.GEMINI_TIMEOUT_MS = 2000
    sandbox_server.state.received.clear()
    sandbox_server.state.faults = Faults()
    sandbox_server.state.calls = 0
    gateway.clients.clear()
    yield sandbox_server
    gateway.clients.clear()


@pytest.fixture(scope="session")
def live_sandbox(tmp_path_factory):
    """The sandbox with its Live side on: ``.url`` (HTTP mint, for the portal's gateway),
    ``.live_url`` (TLS: the mint and the Live WebSocket) and ``.ca_file`` to trust
    (``SSL_CERT_FILE`` for the Python SDK, ``NODE_EXTRA_CA_CERTS`` for node). Shared by the
    session: ``state.live_sessions`` and ``state.tokens`` accumulate, ``state.now`` may be
    replaced by a test that puts it back."""
    from apps.issuance.sandbox import SandboxServer

    with SandboxServer(live=True, cert_dir=tmp_path_factory.mktemp("sandbox-tls")) as server:
        yield server


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
    """A redis-server of the test's own on a free port, the quota engine pointed at it:
    stopping it (a quota store outage) disturbs nothing else."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = RedisProcess(port)
    server.start()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    quotas._engine_for.cache_clear()
    yield server
    if server.process.poll() is None:
        server.stop()
    quotas._engine_for.cache_clear()
