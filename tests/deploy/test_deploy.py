"""deploy/ cannot be run here (no container engine): its files are checked against the code."""

import re
import tomllib
from pathlib import Path

import uvicorn
import yaml

from tests.portal.test_settings import run_manage

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_SECTION = "# ==== Read by docker-compose.yml"
# The environment every deployment must be able to set (README, "Configuration").
DESIGN_ENVIRONMENT = {
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "GEMINI_BASE_URL",
    "GEMINI_API_KEY",
    "GOOGLE_OAUTH_CLIENT_ID",
    "GOOGLE_OAUTH_CLIENT_SECRET",
    "FIELD_ENCRYPTION_KEYS",
    "AUDIT_HMAC_KEY",
}
READ_BY_UVICORN = {"WEB_CONCURRENCY"}
ASSIGNMENT = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$")


def settings_environment() -> set[str]:
    source = (ROOT / "portal" / "settings.py").read_text()
    return set(re.findall(r'env_(?:str|bool|int|list)\(\s*"([A-Z][A-Z0-9_]*)"', source))


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(Ephemera's variables, the containers' variables), commented-out defaults included."""
    text = (DEPLOY / "env.example").read_text()
    ours, containers = text.split(COMPOSE_SECTION)
    return _assignments(ours), _assignments(containers)


def _assignments(text: str) -> dict[str, str]:
    return {
        match[1]: match[2]
        for line in text.splitlines()
        if (match := ASSIGNMENT.match(line.strip()))
    }


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_env_example_lists_exactly_what_the_settings_read():
    ours, _ = env_example()

    assert set(ours) == settings_environment()
    assert set(ours) >= DESIGN_ENVIRONMENT


def test_env_example_container_variables_are_all_used():
    _, containers = env_example()
    compose_text = (DEPLOY / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))

    assert interpolated == set(containers) - READ_BY_UVICORN
    assert set(containers) >= READ_BY_UVICORN
    assert not set(containers) & settings_environment()


def test_env_example_holds_placeholders_only():
    ours, containers = env_example()
    secrets = {
        name: value
        for name, value in {**ours, **containers}.items()
        if re.search(r"_KEYS?$|SECRET|_PASSWORD$|CLIENT_ID|DATABASE_URL", name)
    }

    assert secrets
    for name, value in secrets.items():
        assert value == "" or "change-me" in value, f"{name} must be a placeholder"
    text = (DEPLOY / "env.example").read_text()
    assert not re.search(r"[A-Za-z0-9_-]{43}=", text)  # a Fernet key
    assert "AIza" not in text  # a Google API key


def test_compose_runs_every_process_with_healthchecks():
    services = compose()["services"]

    assert set(services) == {"migrate", "proxy", "web", "worker", "beat", "postgres", "redis"}
    web = services["web"]
    assert web["command"][:2] == ["uvicorn", "portal.asgi:application"]
    assert int(env_example()[1]["WEB_CONCURRENCY"]) > 1  # several uvicorn workers
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    assert services["worker"]["command"][:3] == ["celery", "--app=portal", "worker"]
    assert services["beat"]["command"][:3] == ["celery", "--app=portal", "beat"]
    assert "inspect ping" in " ".join(services["worker"]["healthcheck"]["test"])
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    for name in ("postgres", "redis", "proxy"):
        assert services[name]["healthcheck"]["test"]
    for name in ("web", "worker", "beat"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["postgres"]["condition"] == needs["redis"]["condition"] == "service_healthy"
        assert services[name]["env_file"] == ".env"
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services[name]["build"]["target"] == "app"
    assert (DEPLOY / services["web"]["build"]["context"] / "deploy" / "Dockerfile").is_file()


def test_compose_puts_the_proxy_alone_in_front_of_web():
    services = compose()["services"]
    proxy, web = services["proxy"], services["web"]

    assert proxy["build"]["target"] == "proxy"
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
    assert proxy["environment"]["EPHEMERA_UPSTREAM"] == "web:8000"
    assert sorted(port.rsplit(":", 1)[1] for port in proxy["ports"]) == ["443", "80"]
    assert "ports" not in web  # reachable through the proxy (and the compose network) only
    # uvicorn believes forwarded headers from the proxy's own fixed address, nobody else's.
    proxy_address = proxy["networks"]["default"]["ipv4_address"]
    assert web["environment"]["FORWARDED_ALLOW_IPS"] == proxy_address
    assert "*" not in proxy_address
    # The template the image renders at start is the one the tests run (tests/deployment.py).
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/nginx.conf /etc/nginx/templates/nginx.conf.template" in dockerfile
    wanted = set(re.findall(r"\$\{(EPHEMERA_[A-Z_]+)\}", (DEPLOY / "nginx.conf").read_text()))
    assert wanted == set(proxy["environment"])


def test_the_proxy_is_the_only_one_believed_about_https():
    ours, _ = env_example()

    # Django's own header check would believe X-Forwarded-Proto from anyone reaching web.
    assert ours["SECURE_PROXY_SSL_HEADER"] == "0"


def test_dockerfile_installs_from_the_lock_with_the_makefiles_uv():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())

    assert "uv sync --frozen --no-dev" in dockerfile
    (uv_version,) = re.findall(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert f"ARG UV_VERSION={uv_version}" in dockerfile
    (python,) = re.findall(r"^ARG PYTHON_VERSION=(\d+\.\d+)$", dockerfile, re.M)
    minimum = project["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, minimum.split(".")))
    assert "portal.asgi:application" in dockerfile
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for source in re.findall(r"^COPY (?!--)(\S+(?: \S+)*) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
            assert f"!{path}" in ignore, f"{path} is excluded from the build context"


def test_env_example_as_shipped_cannot_pass_the_deploy_check(tmp_path):
    ours = (DEPLOY / "env.example").read_text().split(COMPOSE_SECTION)[0]
    active = _assignments("\n".join(ln for ln in ours.splitlines() if not ln.startswith("#")))

    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env=active, tmp_path=tmp_path
    )

    assert result.returncode != 0
    for problem in ("security.W009", "ephemera.E003", "ephemera.W003"):
        assert problem in result.stderr


def test_uvicorn_serves_the_portal_on_asyncios_own_event_loop():
    """uvloop aborted the portal under load (a double free in its TCP transports; README,
    "Serving"): the loop uvicorn picks by default, in dev, the image and the bench, is asyncio's."""
    loop_factory = uvicorn.Config("portal.asgi:application").get_loop_factory()
    assert loop_factory.__module__.startswith("asyncio.")


def test_the_image_dumps_with_the_compose_servers_postgresql_client():
    """manage.py backup_drill runs pg_dump in the app image; pg_dump refuses a newer server."""
    (client,) = re.findall(
        r"^ARG POSTGRES_CLIENT_MAJOR=(\d+)$", (DEPLOY / "Dockerfile").read_text(), re.M
    )
    server = compose()["services"]["postgres"]["image"].split(":")[1].split("-")[0]

    assert client == server
