"""The portal as deploy/ runs it, on this machine: for the tests that need every process, and
for bench/.

nginx (Debian's, with ``deploy/nginx.conf`` filled in as the proxy container fills it) in front
of the web processes, started with ``docker-compose.yml``'s own ``web`` command and
``WEB_CONCURRENCY`` workers, Celery worker(s) and beat with the compose file's commands, and
the sandbox upstream. The caller brings the portal's environment (its database, Redis or not,
keys); everything else lives in a folder of its own.
"""

import contextlib
import ctypes
import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PY = sys.executable
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
_COMPOSE_DEFAULT = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def compose_command(service: str, env: dict[str, str]) -> list[str]:
    """A service's command in docker-compose.yml, ``${NAME:-default}`` filled from ``env``."""
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    return [
        _COMPOSE_DEFAULT.sub(lambda m: env.get(m[1]) or m[2], part)
        for part in services[service]["command"]
    ]


def _with_option(command: list[str], name: str, value: str) -> list[str]:
    """``command`` with ``--name=value`` replacing the compose file's own value, or added."""
    kept = [part for part in command if not part.startswith(f"--{name}=")]
    return [*kept, f"--{name}={value}"]


def render_nginx_conf(values: dict[str, str]) -> str:
    """deploy/nginx.conf with the given ``${EPHEMERA_...}`` filled, as envsubst fills it."""
    text = (DEPLOY / "nginx.conf").read_text()
    wanted = set(re.findall(r"\$\{(EPHEMERA_[A-Z_]+)\}", text))
    missing = wanted - set(values)
    if missing:
        raise ValueError(f"nginx.conf needs {sorted(missing)}")
    return re.sub(r"\$\{(EPHEMERA_[A-Z_]+)\}", lambda m: values[m[1]], text)


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for ``localhost`` and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, public_key, signing_key, *, ca: bool, sans=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = certificate("Ephemera test CA", "Ephemera test CA", ca_key.public_key(), ca_key, ca=True)
    server = certificate(
        "localhost",
        "Ephemera test CA",
        server_key.public_key(),
        ca_key,
        ca=False,
        sans=(
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ),
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def nginx_command(
    folder: Path,
    *,
    upstream: str,
    http_port: int,
    https_port: int,
    static_root: Path,
    client_timeout: str = "10s",
) -> list[str]:
    """Debian's nginx running deploy/nginx.conf in the foreground, with TLS files made for
    ``localhost`` (the CA is ``folder/tls/ca.pem``) and its state kept in ``folder``."""
    if NGINX is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    tls = folder / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    _, certificate, key = make_tls_files(tls)
    conf = folder / "nginx.conf"
    conf.write_text(
        render_nginx_conf(
            {
                "EPHEMERA_SERVER_NAME": "localhost",
                "EPHEMERA_UPSTREAM": upstream,
                "EPHEMERA_HTTP_LISTEN": f"127.0.0.1:{http_port}",
                "EPHEMERA_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
                "EPHEMERA_TLS_CERTIFICATE": str(certificate),
                "EPHEMERA_TLS_CERTIFICATE_KEY": str(key),
                "EPHEMERA_STATIC_ROOT": str(static_root),
                "EPHEMERA_CLIENT_TIMEOUT": client_timeout,
            }
        )
    )
    (folder / "nginx").mkdir(exist_ok=True)
    globals_ = f"daemon off; pid {folder / 'nginx.pid'};"
    if os.geteuid() == 0:
        # Workers would drop to nobody, who cannot read this run's private folders.
        globals_ += " user root;"
    return [NGINX, "-p", str(folder / "nginx"), "-c", str(conf), "-e", "stderr", "-g", globals_]


@dataclass
class Deployment:
    """One deployment's processes. ``start()`` returns once every one of them answers."""

    env: dict[str, str]
    folder: Path
    web_workers: int = 2
    celery_workers: int = 1
    beat: bool = True
    proxy: bool = True
    client_timeout: str = "10s"
    sandbox_latency_ms: int = 0
    # collectstatic's output shared by several deployments (collected into it once).
    static_cache: Path | None = None
    # Google's stand-in: a sandbox of the deployment's own unless given (bench/ shares one).
    upstream_url: str | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sandbox_port, self.web_port = free_port(), free_port()
        self.https_port, self.http_port = free_port(), free_port()
        self.var_dir = Path(self.env.get("EPHEMERA_VAR_DIR") or self.folder / "var")
        self.portal_env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", str(self.folder)),
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "ALLOWED_HOSTS": "localhost,127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore",
            "PYTHONFAULTHANDLER": "1",
            **self.env,
            "EPHEMERA_VAR_DIR": str(self.var_dir),
            "GEMINI_BASE_URL": self.upstream_url or f"http://127.0.0.1:{self.sandbox_port}",
            # Read by uvicorn itself, as in the web container: its workers, and the one proxy
            # whose X-Forwarded-For / -Proto it believes (nginx, here on loopback).
            "WEB_CONCURRENCY": str(self.web_workers),
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
            "PROMETHEUS_MULTIPROC_DIR": str(self.folder / "prometheus"),
        }
        self.portal_env.setdefault("CSRF_TRUSTED_ORIGINS", self.public_url)

    # --- addresses ---------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        """The proxy's HTTPS listener, as a browser or a client backend reaches the portal."""
        return f"https://localhost:{self.https_port}"

    @property
    def web_url(self) -> str:
        """The web processes themselves, as the proxy, probes and Prometheus reach them."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sandbox_url(self) -> str:
        return self.portal_env["GEMINI_BASE_URL"]

    @property
    def ca_file(self) -> Path:
        return self.folder / "tls" / "ca.pem"

    def client(self, **options) -> httpx.Client:
        """A kept-alive HTTPS client to the proxy that trusts this deployment's CA."""
        return httpx.Client(base_url=self.public_url, verify=self.ssl_context(), **options)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> "Deployment":
        try:
            self._collect_static()
            if self.upstream_url is None:
                self._start_sandbox()
            self._start_web()
            for number in range(self.celery_workers):
                self._start_worker(number)
            if self.beat:
                self._start_beat()
            if self.proxy:
                self._start_proxy()
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Web, proxy, Celery, then the sandbox last: nothing is left mid-call."""
        for name in sorted(self.processes, key=lambda n: n == "sandbox"):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def __enter__(self) -> "Deployment":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 (kept by the child)
        self.processes[name] = subprocess.Popen(  # noqa: S603 (our own fixed commands)
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self.processes[name]

    def _collect_static(self) -> None:
        """As the image's build does: hashed, compressed files for the proxy to serve."""
        static = self.var_dir / "static"
        if self.static_cache is not None and not static.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            static.symlink_to(self.static_cache, target_is_directory=True)
        if not (static / "staticfiles.json").exists():
            subprocess.run(  # noqa: S603
                [PY, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                cwd=ROOT,
                env=self.portal_env,
                check=True,
            )

    def _start_sandbox(self) -> None:
        command = [PY, "manage.py", "sandbox_gemini", "--port", str(self.sandbox_port)]
        command += ["--latency-ms", str(self.sandbox_latency_ms)]
        self._spawn("sandbox", command, self.portal_env)

    def _start_web(self) -> None:
        command = compose_command("web", self.portal_env)
        assert command[0] == "uvicorn"
        command = _with_option(command[1:], "host", "127.0.0.1")
        command = _with_option(command, "port", str(self.web_port))
        (self.folder / "prometheus").mkdir(exist_ok=True)
        self._spawn("web", [PY, "-m", "uvicorn", *command], self.portal_env)

    def _start_worker(self, number: int) -> None:
        command = compose_command("worker", self.portal_env)
        assert command[0] == "celery"
        # Each worker container has a host name of its own; here they share one host.
        command = _with_option(command[1:], "hostname", f"worker{number}@%h")
        self._spawn(f"worker{number}", [PY, "-m", "celery", *command], self.portal_env)

    def _start_beat(self) -> None:
        command = compose_command("beat", self.portal_env)
        assert command[0] == "celery"
        schedule = self.folder / "celerybeat-schedule"
        command = _with_option(command[1:], "schedule", str(schedule))
        self._spawn("beat", [PY, "-m", "celery", *command], self.portal_env)

    def _start_proxy(self) -> None:
        command = nginx_command(
            self.folder,
            upstream=f"127.0.0.1:{self.web_port}",
            http_port=self.http_port,
            https_port=self.https_port,
            static_root=self.var_dir / "static",
            client_timeout=self.client_timeout,
        )
        self._spawn("nginx", command, self.portal_env)

    def _wait_until_serving(self, deadline: float = 60) -> None:
        checks = [f"{self.sandbox_url}/_sandbox/health", f"{self.web_url}/readyz"]
        end = time.monotonic() + deadline
        for url in checks:
            while not _answers(url):
                self._raise_if_exited()
                if time.monotonic() > end:
                    raise RuntimeError(f"{url} did not come up:\n{self._logs_tail()}")
                time.sleep(0.1)
        while len(self.web_worker_pids()) < self.web_workers:
            if time.monotonic() > end:
                raise RuntimeError(f"web workers did not start:\n{self._logs_tail()}")
            time.sleep(0.1)
        if self.proxy:
            with self.client(timeout=5) as client:
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if client.get("/healthz").status_code == 200:
                            break
                    self._raise_if_exited()
                    if time.monotonic() > end:
                        raise RuntimeError(f"nginx did not come up:\n{self._logs_tail()}")
                    time.sleep(0.1)

    def _raise_if_exited(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name)}")

    def _logs_tail(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-2000:]}" for name in self.processes)

    # --- processes ---------------------------------------------------------------------

    def web_worker_pids(self) -> list[int]:
        """The processes that serve: uvicorn's workers, children of its supervisor (next to
        multiprocessing's resource tracker), or with one worker uvicorn's own process."""
        web = self.processes["web"].pid
        if self.web_workers == 1:
            return [web]
        return [pid for pid in _children(web) if b"spawn_main" in _cmdline(pid)]

    def nginx_worker_pids(self) -> list[int]:
        return _children(self.processes["nginx"].pid)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return sorted(children)


# --- The socket a server holds for a client's connection ---------------------------------

_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (a 5.6+ system call)
_libc = ctypes.CDLL(None, use_errno=True)


def server_socket_nodelay(pids: list[int], client: socket.socket) -> bool:
    """Whether the server's end of ``client``'s TCP connection has TCP_NODELAY set.

    Read from the serving process itself: the connection's socket is found by its inode in
    /proc/net/tcp and the owner's fd table, duplicated into this process with
    pidfd_getfd(2), and asked. Nothing is timed; what a served connection has is what counts.
    """
    client_host, client_port = client.getsockname()[:2]
    server_host, server_port = client.getpeername()[:2]
    inode = _tcp_inode(local=(server_host, server_port), remote=(client_host, client_port))
    for pid in pids:
        for fd_path in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd_path) == f"socket:[{inode}]":
                    with _borrowed_socket(pid, int(fd_path.name)) as sock:
                        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    raise LookupError(f"no process of {pids} holds the server end of {client_host}:{client_port}")


def _tcp_inode(local: tuple[str, int], remote: tuple[str, int]) -> str:
    def encoded(host: str, port: int) -> str:
        packed = socket.inet_aton(host)
        return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"

    wanted = (encoded(*local), encoded(*remote))
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == wanted:
            return fields[9]
    raise LookupError(f"no TCP connection {local} <- {remote}")


@contextlib.contextmanager
def tcp_sockets_of(pid: int):
    """Copies of the TCP sockets ``pid`` holds (IPv4), usable for the block."""
    with contextlib.ExitStack() as stack:
        found = []
        for fd_path in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if not os.readlink(fd_path).startswith("socket:["):
                    continue
                sock = stack.enter_context(_borrowed_socket(pid, int(fd_path.name)))
                if sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM:
                    found.append(sock)
        yield found


@contextlib.contextmanager
def _borrowed_socket(pid: int, fd: int):
    pidfd = os.pidfd_open(pid)
    try:
        copy = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
    finally:
        os.close(pidfd)
    sock = socket.socket(fileno=copy)
    try:
        yield sock
    finally:
        sock.detach()
        os.close(copy)
