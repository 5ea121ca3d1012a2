"""deploy/nginx.conf in front of the web processes, as a client on the internet meets them.

One deployment for the module (nginx, two web workers, a Celery worker and beat, on
PostgreSQL + Redis); each test commits its own tenant.
"""

import contextlib
import http.client
import json
import socket
import ssl

import httpx
import pytest

from apps.audit.models import TokenGrant
from tests.conftest import make_world
from tests.deploy.conftest import (
    flush_served_redis,
    portal_environment,
    require_nginx,
    require_postgres_and_redis,
)
from tests.deployment import Deployment, server_socket_nodelay, tcp_sockets_of

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_TIMEOUT_SECONDS = 2


@pytest.fixture(scope="module")
def deployment(django_db_setup, tmp_path_factory):
    require_postgres_and_redis()
    require_nginx()
    folder = tmp_path_factory.mktemp("proxied")
    flush_served_redis()
    with Deployment(
        portal_environment(),
        folder,
        web_workers=2,
        client_timeout=f"{CLIENT_TIMEOUT_SECONDS}s",
    ) as deployment:
        yield deployment


@pytest.fixture
def world(deployment):
    return make_world("Alpha")


def token_request(world, **headers) -> dict:
    return {
        "json": {"profile": world.profile.slug, "end_user": "proxied-user"},
        "headers": {"Authorization": f"Bearer {world.raw_client_key}", **headers},
    }


def client_from(deployment: Deployment, address: str) -> httpx.Client:
    """A kept-alive HTTPS client whose connections come from ``address`` (a loopback alias)."""
    transport = httpx.HTTPTransport(local_address=address, verify=deployment.ssl_context())
    return httpx.Client(base_url=deployment.public_url, transport=transport, timeout=30)


def test_the_audit_trail_records_the_clients_address_not_the_proxys(deployment, world):
    with client_from(deployment, "127.0.0.2") as client:
        answer = client.post("/api/v1/tokens", **token_request(world))
        forged = client.post(
            "/api/v1/tokens", **token_request(world, **{"X-Forwarded-For": "203.0.113.9"})
        )

    assert answer.status_code == forged.status_code == 201
    grants = TokenGrant.objects.filter(organization=world.organization)
    assert sorted(grants.values_list("ip", flat=True)) == ["127.0.0.2", "127.0.0.2"]


def test_forwarded_headers_from_anyone_but_the_proxy_are_not_believed(deployment, world):
    transport = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(base_url=deployment.web_url, transport=transport) as direct:
        answer = direct.post(
            "/api/v1/tokens",
            **token_request(
                world, **{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
            ),
        )

    # Still plain HTTP to the portal, so it sends the client to HTTPS; nothing was issued.
    assert answer.status_code == 301
    assert answer.headers["Location"].startswith("https://")
    assert not TokenGrant.objects.filter(organization=world.organization).exists()


def test_an_api_body_over_16_kib_is_refused_by_the_proxy_in_the_apis_shape(deployment, world):
    padding = "x" * (17 * 1024)
    with deployment.client(timeout=30) as client:
        answer = client.post(
            "/api/v1/tokens",
            content=json.dumps({"profile": world.profile.slug, "end_user": padding}),
            headers={
                "Authorization": f"Bearer {world.raw_client_key}",
                "Content-Type": "application/json",
            },
        )

    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == "invalid_request"
    assert not TokenGrant.objects.filter(organization=world.organization).exists()


def test_a_client_that_stalls_in_its_headers_is_cut_off(deployment):
    context = deployment.ssl_context()
    raw = socket.create_connection(("127.0.0.1", deployment.https_port), timeout=30)
    with context.wrap_socket(raw, server_hostname="localhost") as stalled:
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        try:
            ended_with = stalled.recv(1024)  # a TimeoutError after 30 s fails the test
        except (ConnectionResetError, ssl.SSLError):
            ended_with = b""

    # Closed by the proxy after CLIENT_TIMEOUT_SECONDS: no response, or its 408.
    assert ended_with == b"" or ended_with.startswith(b"HTTP/1.1 408")


def test_a_client_that_stalls_in_its_body_is_cut_off(deployment, world):
    context = deployment.ssl_context()
    raw = socket.create_connection(("127.0.0.1", deployment.https_port), timeout=30)
    with context.wrap_socket(raw, server_hostname="localhost") as stalled:
        stalled.sendall(
            b"POST /api/v1/tokens HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Bearer " + world.raw_client_key.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
        )
        try:
            ended_with = stalled.recv(1024)
        except (ConnectionResetError, ssl.SSLError):
            ended_with = b""

    assert ended_with == b"" or ended_with.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("path", ["/readyz", "/metrics"])
def test_probes_and_metrics_are_not_on_the_public_listener(deployment, path):
    with deployment.client() as client:
        public = client.get(path)
    internal = httpx.get(f"{deployment.web_url}{path}")

    assert public.status_code == 404
    assert internal.status_code == 200


def test_the_proxy_serves_static_files_itself_with_long_caching_for_hashed_names(deployment):
    manifest = json.loads((deployment.var_dir / "static" / "staticfiles.json").read_text())
    hashed = manifest["paths"]["admin/css/base.css"]

    with deployment.client() as client:
        answer = client.get(f"/static/{hashed}", headers={"Accept-Encoding": "gzip"})

    assert answer.status_code == 200
    assert "immutable" in answer.headers["Cache-Control"]
    assert answer.headers["Content-Encoding"] == "gzip"
    assert "X-Request-ID" not in answer.headers  # never reached the portal
    assert b"DJANGO Admin styles" in answer.content


def test_connections_stay_alive_and_nagle_stays_off_on_both_sides_of_the_proxy(deployment, world):
    context = deployment.ssl_context()
    client = http.client.HTTPSConnection("localhost", deployment.https_port, context=context)
    for _ in range(5):
        client.request(
            "POST",
            "/api/v1/tokens",
            body=json.dumps({"profile": world.profile.slug, "end_user": "kept-alive"}),
            headers={
                "Authorization": f"Bearer {world.raw_client_key}",
                "Content-Type": "application/json",
            },
        )
        answer = client.getresponse()
        answer.read()
        assert answer.status == 201
        assert not answer.will_close

    assert server_socket_nodelay(deployment.nginx_worker_pids(), client.sock)
    upstream = upstream_connections(deployment)
    assert upstream, "nginx closed its connections to the portal after each request"
    assert all(upstream.values())
    client.close()


def upstream_connections(deployment: Deployment) -> dict[int, bool]:
    """nginx's open connections to the web port: their local port -> TCP_NODELAY on the
    portal's end."""
    found = {}
    for pid in deployment.nginx_worker_pids():
        with tcp_sockets_of(pid) as sockets:
            for nginx_end in sockets:
                with contextlib.suppress(OSError):  # a listener has no peer
                    if nginx_end.getpeername() == ("127.0.0.1", deployment.web_port):
                        found[nginx_end.getsockname()[1]] = server_socket_nodelay(
                            deployment.web_worker_pids(), nginx_end
                        )
    return found
