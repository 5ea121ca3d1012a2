"""The web server as the portal is started: Nagle's algorithm off on every served connection.

A response leaves as two writes (headers, then body). On a socket with Nagle on, the second
waits for the client's delayed ACK, ~40 ms on Linux, on every kept-alive request. uvicorn
binds the listener itself under ``--workers`` and asyncio sets TCP_NODELAY only on sockets
that say they are TCP; the check here reads the option from the serving process's own socket
(tests/deployment.py), so nothing is timed.
"""

import http.client
import subprocess
import time

import pytest

from portal.management.commands.dev import web_command
from tests.deploy.conftest import portal_environment
from tests.deployment import ROOT, Deployment, free_port, server_socket_nodelay

pytestmark = pytest.mark.django_db(transaction=True)


def kept_alive_connections(host: str, port: int, count: int) -> list[http.client.HTTPConnection]:
    """``count`` connections, each having been served a request and still open."""
    connections = []
    for _ in range(count):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert not response.will_close
        connections.append(connection)
    return connections


def test_the_compose_web_command_with_several_workers_keeps_nagle_off(deploy):
    deployment = deploy(web_workers=2, celery_workers=0, beat=False, proxy=False)
    workers = deployment.web_worker_pids()
    assert len(workers) == 2

    connections = kept_alive_connections("127.0.0.1", deployment.web_port, 12)

    assert all(server_socket_nodelay(workers, c.sock) for c in connections)
    for connection in connections:
        connection.close()


def test_the_development_server_keeps_nagle_off(tmp_path, static_cache):
    port = free_port()
    env = Deployment(portal_environment(), tmp_path, static_cache=static_cache).portal_env
    server = subprocess.Popen(  # noqa: S603
        web_command("127.0.0.1", port),
        cwd=ROOT,
        env={**env, "WEB_CONCURRENCY": "3", "DEBUG": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connections = kept_alive_connections("127.0.0.1", port, 3)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)

        # One process, whatever WEB_CONCURRENCY says, and Nagle off on its connections.
        assert all(server_socket_nodelay([server.pid], c.sock) for c in connections)
    finally:
        server.terminate()
        server.wait(timeout=30)
