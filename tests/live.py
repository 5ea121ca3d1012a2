"""The portal on a real port, for tests whose client is another program (a snippet, a fuzzer).

Tests that use it need ``pytest.mark.django_db(transaction=True)``: the server's threads see
only committed rows.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from django.db import connection

from apps.issuance import gateway
from portal.asgi import build_application


@contextmanager
def serve_portal() -> Iterator[str]:
    """Yield the base URL (no trailing slash) of the deployed ASGI app (as portal.asgi builds
    it, afresh so that settings fixtures apply) served by uvicorn in a thread."""
    server = uvicorn.Server(
        uvicorn.Config(
            build_application(),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("The portal did not start.")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        gateway.clients.clear()
        if connection.vendor == "postgresql":
            connection.close_pool()  # the server's threads borrowed from it; free them all
