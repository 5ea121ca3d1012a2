"""`manage.py dev`: the whole portal on the embedded default, in one terminal."""

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from apps.issuance.sandbox.tls import sandbox_cert_dir, sandbox_certificates
from portal.demo import demo_seed


def web_command(host: str, port: int) -> list[str]:
    """The development web server: one uvicorn process (our interpreter, fixed arguments)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "portal.asgi:application",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]


def _shell_path(path: str) -> str:
    """``path`` relative to the working directory when inside it, for a line a person pastes."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def live_one_liner(
    base: str, client_key: str, profile: str, live_url: str, ca_file: str, python: str
) -> str:
    """One line of shell that gets a token from the portal and opens a Live session with it
    through the sandbox, with the real SDK: what a client app does, end to end."""
    request = (
        f"r.Request('{base}/api/v1/tokens',"
        f"json.dumps({{'profile':'{profile}','end_user':'demo-user'}}).encode(),"
        f"{{'Authorization':'Bearer {client_key}','Content-Type':'application/json'}})"
    )
    code = (
        "import asyncio,json,urllib.request as r;from google import genai;"
        f"d=json.load(r.urlopen({request}));"
        f"c=genai.Client(api_key=d['token'],http_options={{'api_version':'v1alpha',"
        f"'base_url':'{live_url}'}});m,hi=d['model'],'Hello';"
        "exec('async def live():\\n async with c.aio.live.connect(model=m) as s:\\n"
        "  await s.send_realtime_input(text=hi)\\n  return [x async for x in s.receive()]');"
        "got=asyncio.run(live());n=sum(len(x.data or b'') for x in got);"
        "print('got',n,'bytes of audio,','turn complete' if got[-1].server_content"
        " and got[-1].server_content.turn_complete else 'no turn complete')"
    )
    return f'SSL_CERT_FILE={_shell_path(ca_file)} {_shell_path(python)} -W ignore -c "{code}"'


STARTUP_TIMEOUT = 60.0


def wait_until_listening(
    addresses: list[tuple[str, int]], processes: list[subprocess.Popen], *, timeout: float
) -> bool:
    """Wait until each (host, port) accepts a connection, so the banner's commands work the
    moment they are printed. Gives up when a child exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    waiting = list(addresses)
    while waiting and time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            return False
        try:
            socket.create_connection(waiting[0], timeout=1).close()
            waiting.pop(0)
        except OSError:
            time.sleep(0.2)
    return not waiting


class Command(BaseCommand):
    help = "Migrate, seed the demo, then run the web server and a Celery worker with beat."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Run the web server only.")
        parser.add_argument(
            "--sandbox-port", type=int, default=8765, help="Port of the sandbox Gemini upstream."
        )
        parser.add_argument(
            "--live-port", type=int, default=8766, help="TLS port of the sandbox's Live API."
        )
        parser.add_argument("--password", help="Password for every demo login (default: new).")

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("`dev` is for development: run it with DEBUG=1.")
        if options["live_port"] <= 0:  # sandbox_gemini's "Live off"; dev's banner needs it on
            raise CommandError("--live-port must be a port number: dev always serves Live.")
        call_command("migrate", interactive=False, verbosity=0)
        demo = demo_seed(password=options["password"])

        sandbox_url = f"http://127.0.0.1:{options['sandbox_port']}"
        live_url = f"https://127.0.0.1:{options['live_port']}"
        # Made here so the banner's CA path exists at once; the sandbox reuses the files.
        ca_file = str(sandbox_certificates(sandbox_cert_dir()).ca_file)
        env = os.environ.copy()
        # The embedded default mints through the sandbox, never Google, with a placeholder key.
        env["GEMINI_BASE_URL"] = sandbox_url
        env.setdefault("GEMINI_API_KEY", "sandbox-dev-key")
        processes = [
            self._sandbox(options["sandbox_port"], options["live_port"]),
            self._web(options["host"], options["port"], env),
        ]
        if not options["no_worker"]:
            processes.append(self._worker(env))
        web_host = "127.0.0.1" if options["host"] in ("0.0.0.0", "") else options["host"]  # noqa: S104
        addresses = [
            (web_host, options["port"]),
            ("127.0.0.1", options["sandbox_port"]),
            ("127.0.0.1", options["live_port"]),
        ]
        if not wait_until_listening(addresses, processes, timeout=STARTUP_TIMEOUT):
            self.stderr.write("Not every server is listening yet; the banner may be early.")
        self._print_banner(options, demo, sandbox_url, live_url, ca_file)
        self._supervise(processes)

    def _sandbox(self, port: int, live_port: int) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "manage.py",
                "sandbox_gemini",
                "--port",
                str(port),
                "--live-port",
                str(live_port),
            ],
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
        )

    def _web(self, host: str, port: int, env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(web_command(host, port), env=env)  # noqa: S603

    def _worker(self, env: dict[str, str]) -> subprocess.Popen:
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
            env=env,
        )

    def _print_banner(
        self, options: dict, demo: dict, sandbox_url: str, live_url: str, ca_file: str
    ) -> None:
        base = f"http://{options['host']}:{options['port']}"
        worker = "off" if options["no_worker"] else "Celery worker + beat (filesystem broker)"
        lines = [
            "",
            "Ephemera is running on the embedded default.",
            f"  Admin:     {base}/admin/",
            f"  Dashboard: {base}/admin/audit/tokengrant/dashboard/ (as the auditor)",
            f"  Sign-in:   {base}/accounts/login/",
            f"  API docs:  {base}/api/v1/docs",
            f"  Upstream:  sandbox Gemini at {sandbox_url} (no call reaches Google)",
            f"  Live API:  sandbox at {live_url} (TLS; trust its CA {ca_file})",
            f"  Worker:    {worker}",
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
            f"Demo client key (new every run): {demo['client_key']}",
            "Get a token:",
            f"  curl -s -X POST {base}/api/v1/tokens \\",
            f"    -H 'Authorization: Bearer {demo['client_key']}' \\",
            "    -H 'Content-Type: application/json' \\",
            f"""    -d '{{"profile": "{demo["profile"]["slug"]}", "end_user": "demo-user"}}'""",
            "Open a Live session with a fresh token (the real SDK, through the sandbox):",
            "  "
            + live_one_liner(
                base, demo["client_key"], demo["profile"]["slug"], live_url, ca_file, sys.executable
            ),
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
