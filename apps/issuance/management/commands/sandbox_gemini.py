import uvicorn
from django.core.management.base import BaseCommand

from apps.issuance.sandbox import Faults, SandboxApp, SandboxState


class Command(BaseCommand):
    help = "Run the sandbox stand-in for Google's token mint (POST /v1alpha/auth_tokens)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
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
        self.stdout.write(f"Sandbox Gemini upstream on http://{options['host']}:{options['port']}")
        uvicorn.run(
            SandboxApp(state),
            host=options["host"],
            port=options["port"],
            log_level="warning",
            access_log=False,
            # One process holds the sandbox's state; uvicorn would otherwise read a
            # WEB_CONCURRENCY meant for the portal and refuse an application object.
            workers=1,
        )
