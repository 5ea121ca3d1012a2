"""`manage.py dev`: the whole portal on the embedded default, in one terminal."""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from portal.demo import demo_seed


class Command(BaseCommand):
    help = "Migrate, seed the demo, then run the web server and a Celery worker with beat."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Run the web server only.")
        parser.add_argument("--password", help="Password for every demo login (default: new).")

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("`dev` is for development: run it with DEBUG=1.")
        call_command("migrate", interactive=False, verbosity=0)
        demo = demo_seed(password=options["password"])

        processes = [self._web(options["host"], options["port"])]
        if not options["no_worker"]:
            processes.append(self._worker())
        self._print_banner(options["host"], options["port"], demo, options["no_worker"])
        self._supervise(processes)

    def _web(self, host: str, port: int) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603  (our own interpreter and fixed arguments)
            [
                sys.executable,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=os.environ.copy(),
        )

    def _worker(self) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--beat",
                "--pool=solo",
                "--loglevel=WARNING",
                f"--schedule={settings.CELERY_BEAT_SCHEDULE_FILENAME}",
            ],
            env=os.environ.copy(),
        )

    def _print_banner(self, host: str, port: int, demo: dict, no_worker: bool) -> None:
        base = f"http://{host}:{port}"
        lines = [
            "",
            "Ephemera is running on the embedded default.",
            f"  Admin:     {base}/admin/",
            f"  Sign-in:   {base}/accounts/login/",
            f"  Worker:    {'off' if no_worker else 'Celery worker + beat (filesystem broker)'}",
            f"  Database:  {settings.DATABASES['default']['NAME']}",
            "",
            f"Demo organisation '{demo['organization']['slug']}' logins (username / password):",
        ]
        lines += [
            f"  {login['role']:<9} {login['username']:<24} {login['password']}"
            for login in demo["users"]
        ]
        lines += [
            "",
            f"Demo profile: {demo['profile']['slug']}",
            f"Demo client key (shown once; new every run): {demo['client_key']}",
            "",
            "Press Ctrl+C to stop.",
            "",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _supervise(self, processes: list[subprocess.Popen]) -> None:
        """Run until Ctrl+C or until any child dies, then stop the others cleanly."""
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while not stopping and all(p.poll() is None for p in processes):
                time.sleep(0.3)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
        failed = [p for p in processes if p.returncode not in (0, -signal.SIGTERM, None)]
        if failed and not stopping:
            raise CommandError(f"A child process exited with code {failed[0].returncode}.")
