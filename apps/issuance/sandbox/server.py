"""The sandbox on real ports, in a background thread: plain HTTP, and TLS when Live is on."""

import asyncio
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from apps.issuance.sandbox.app import SandboxApp, SandboxState
from apps.issuance.sandbox.tls import sandbox_certificates


class SandboxServer:
    """``with SandboxServer() as s: s.url``; with ``live=True`` also ``s.live_url`` and
    ``s.ca_file``: a TLS listener on the same event loop and state that serves the mint and
    the Live WebSocket. The certificates go to ``cert_dir`` (a new temporary directory when
    not given) and are reused there while valid."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        state: SandboxState | None = None,
        *,
        live: bool = False,
        live_port: int = 0,
        cert_dir: Path | str | None = None,
    ):
        self.app = SandboxApp(state)
        self.servers = [uvicorn.Server(self._config(host, port))]
        self.ca_file: Path | None = None
        self._tmp = None
        if live:
            if cert_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="ephemera-sandbox-")
                cert_dir = self._tmp.name
            certs = sandbox_certificates(Path(cert_dir), hosts=(host,))
            self.ca_file = certs.ca_file
            self.servers.append(
                uvicorn.Server(
                    self._config(
                        host,
                        live_port,
                        ssl_certfile=str(certs.cert_file),
                        ssl_keyfile=str(certs.key_file),
                    )
                )
            )
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def _config(self, host: str, port: int, **tls) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            # websockets' own Sans-I/O protocol: no extra dependency, current websockets API.
            ws="websockets-sansio",
            **tls,
        )

    async def _serve(self) -> None:
        await asyncio.gather(*(server.serve() for server in self.servers))

    @property
    def state(self) -> SandboxState:
        return self.app.state

    @staticmethod
    def _address(server: uvicorn.Server) -> tuple[str, int]:
        (sock,) = server.servers[0].sockets
        host, port = sock.getsockname()[:2]
        return ("127.0.0.1" if host == "0.0.0.0" else host), port  # noqa: S104

    @property
    def url(self) -> str:
        host, port = self._address(self.servers[0])
        return f"http://{host}:{port}"

    @property
    def live_url(self) -> str:
        if len(self.servers) < 2:
            raise RuntimeError("This sandbox runs without Live: SandboxServer(live=True).")
        host, port = self._address(self.servers[1])
        return f"https://{host}:{port}"

    def __enter__(self) -> "SandboxServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not all(server.started for server in self.servers):
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.__exit__()
                raise RuntimeError("The sandbox upstream did not start.")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        for server in self.servers:
            server.should_exit = True
        self.thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()
