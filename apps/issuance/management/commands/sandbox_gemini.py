import signal
import threading

from django.core.management.base import BaseCommand

from apps.issuance.sandbox import Faults, SandboxServer, SandboxState
from apps.issuance.sandbox.tls import sandbox_cert_dir


class Command(BaseCommand):
    help = (
        "Run the sandbox stand-in for Google: the token mint (POST /v1alpha/auth_tokens) over "
        "HTTP and, over TLS, the mint and the Live API for the tokens it minted."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="Plain HTTP mint.")
        parser.add_argument(
            "--live-port",
            type=int,
            default=8766,
            help="TLS listener for the mint and the Live WebSocket (0: off).",
        )
        parser.add_argument("--latency-ms", type=int, default=0, help="Delay every mint call.")
        parser.add_argument(
            "--api-key",
            action="append",
            dest="api_keys",
            help="Accept only this API key (repeatable); default: any non-empty key.",
        )

    def handle(self, *args, **options):
        state = SandboxState(
            api_keys=set(options["api_keys"]) if options["api_keys"] else None,
            faults=Faults(delay_ms=options["latency_ms"]),
        )
        live = options["live_port"] != 0
        server = SandboxServer(
            options["host"],
            options["port"],
            state,
            live=live,
            live_port=options["live_port"],
            cert_dir=sandbox_cert_dir() if live else None,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        with server:
            self.stdout.write(f"Sandbox Gemini upstream on {server.url}")
            if live:
                self.stdout.write(f"Sandbox Live API (TLS) on {server.live_url}")
                self.stdout.write(
                    f"Its CA: {server.ca_file} (trust it with SSL_CERT_FILE for Python, "
                    "NODE_EXTRA_CA_CERTS for node)"
                )
            self.stdout.flush()
            while not stop.wait(0.5) and server.thread.is_alive():
                pass
