"""Structured logs: one JSON line per request, fields as fields, secrets never written."""

import io
import json
import logging
import logging.config
import runpy
from contextlib import redirect_stderr, redirect_stdout

import pytest
from celery.utils.log import get_task_logger
from django.conf import global_settings
from django.test import Client
from django.urls import reverse
from django.utils.log import configure_logging
from uvicorn.config import LOGGING_CONFIG as UVICORN_LOGGING

from apps.tenants.models import Role
from portal import settings as deployed_settings
from portal.celery import app as celery_app
from portal.logs import REDACTED, JsonFormatter, ScrubbingFormatter, scrub

# Shaped like a client key (SECRET_PATTERNS); its secret half is what must never be written.
CLIENT_KEY = "eph_AbCdEf123456_" + "k" * 40
MODES = [(True, "plain"), (True, "json"), (False, "plain"), (False, "json")]
MODE_IDS = ["debug-plain", "debug-json", "plain", "json"]


def record(message: str, **extra) -> logging.LogRecord:
    entry = logging.makeLogRecord({"name": "ephemera.test", "levelname": "INFO", "msg": message})
    entry.__dict__.update(extra)
    return entry


def test_json_lines_carry_the_event_and_its_fields():
    line = JsonFormatter().format(record("issuance", org="alpha", status=201, duration_ms=3.2))

    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["event"], entry["org"], entry["status"], entry["duration_ms"]) == (
        "issuance",
        "alpha",
        201,
        3.2,
    )
    assert entry["level"] == "INFO" and entry["ts"].endswith("+00:00")


@pytest.mark.parametrize(
    "secret",
    [
        "eph_AbCdEf123456_" + "x" * 40,
        "AIza" + "B" * 35,
        "auth_tokens/abc123-def.456",
        "Bearer eph_AbCdEf123456_" + "y" * 40,
        "Z" * 43 + "=",  # a Fernet key
    ],
)
def test_anything_shaped_like_a_secret_is_scrubbed_from_messages_and_fields(secret):
    json_line = JsonFormatter().format(record(f"saw {secret}", detail={"nested": [secret]}))
    plain_line = ScrubbingFormatter("%(message)s").format(record(f"saw {secret}", key=secret))

    for line in (json_line, plain_line):
        assert secret not in line
        assert REDACTED in line
    assert scrub("grant 3f2a issued for end user alice") == "grant 3f2a issued for end user alice"


@pytest.mark.django_db
def test_every_request_leaves_one_access_line(client, caplog, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])
    caplog.set_level(logging.INFO, logger="ephemera.access")

    response = client.get(reverse("admin:index") + "?secret=eph_AbCdEf123456_" + "z" * 40)

    lines = [r for r in caplog.records if r.name == "ephemera.access"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.method, line.path, line.status) == ("GET", "/admin/", response.status_code)
    assert line.request_id == response["X-Request-ID"]
    assert line.org == "alpha"  # the admin resolved the tenant, so the line names it
    assert line.duration_ms >= 0
    assert "secret" not in JsonFormatter().format(line)  # the query string is never logged


@pytest.fixture
def deployed_logging(settings, monkeypatch):
    """Logging as portal.settings configures it in one mode, every handler writing to a buffer.

    ``before`` runs first, as uvicorn's own logging config runs before Django's. The test
    settings' logging comes back afterwards.
    """
    written = io.StringIO()

    def configure(*, debug: bool, log_format: str, before=None) -> io.StringIO:
        monkeypatch.setenv("DEBUG", "1" if debug else "0")
        monkeypatch.setenv("LOG_FORMAT", log_format)
        deployed = runpy.run_path(deployed_settings.__file__)
        settings.DEBUG = debug  # Django's own handlers look at it when they write
        with redirect_stderr(written), redirect_stdout(written):
            if before:
                before()
            config = deployed.get("LOGGING_CONFIG", global_settings.LOGGING_CONFIG)
            configure_logging(config, deployed["LOGGING"])
        return written

    yield configure
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


def assert_no_client_key(written: str) -> None:
    assert "k" * 40 not in written
    assert REDACTED in written


@pytest.mark.django_db
@pytest.mark.parametrize(("debug", "log_format"), MODES, ids=MODE_IDS)
def test_a_key_in_a_header_url_or_body_that_django_logs_is_never_written(
    deployed_logging, debug, log_format
):
    written = deployed_logging(debug=debug, log_format=log_format)
    client = Client()

    client.post(
        "/api/v1/tokens",
        {"profile": CLIENT_KEY, "end_user": CLIENT_KEY},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {CLIENT_KEY}",
    )
    client.get(f"/api/v1/{CLIENT_KEY}")
    client.get(f"/api/v1/tokens?key={CLIENT_KEY}")
    client.get(f"/no-such-page/{CLIENT_KEY}/")

    output = written.getvalue()
    for logged_by_django in ("Unauthorized: /api/v1/tokens", "Method Not Allowed", "Not Found"):
        assert logged_by_django in output
    assert_no_client_key(output)


@pytest.mark.parametrize(("debug", "log_format"), MODES, ids=MODE_IDS)
def test_uvicorns_lines_are_scrubbed_and_its_access_line_left_to_ours(
    deployed_logging, debug, log_format
):
    written = deployed_logging(
        debug=debug,
        log_format=log_format,
        before=lambda: logging.config.dictConfig(UVICORN_LOGGING),
    )

    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 7, extra={"color_message": "Started [\x1b[36m%d\x1b[0m]"}
    )
    try:
        raise RuntimeError(f"the app choked on {CLIENT_KEY}")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", "GET", f"/x?key={CLIENT_KEY}", "1.1", 200
    )

    output = written.getvalue()
    assert "Started server process [7]" in output
    assert "\x1b[" not in output and "\\u001b" not in output  # uvicorn's coloured copy is dropped
    assert "Exception in ASGI application" in output
    assert "/x?key=" not in output  # ephemera.access logs requests, without query strings
    assert_no_client_key(output)


def test_a_celery_worker_keeps_the_scrubbing_handlers(deployed_logging, monkeypatch):
    written = deployed_logging(debug=False, log_format="json")
    monkeypatch.setattr(type(celery_app.log), "_setup", False)
    for name in ("_MP_FORK_LOGLEVEL_", "_MP_FORK_LOGFILE_", "_MP_FORK_LOGFORMAT_"):
        monkeypatch.setenv(name, "")  # the worker's setup writes these; put back afterwards

    celery_app.log.setup_logging_subsystem(loglevel="INFO")  # what a worker does as it starts
    get_task_logger("apps.audit.tasks").warning("task saw %s", CLIENT_KEY)

    line = json.loads(written.getvalue().splitlines()[-1])
    assert (line["logger"], line["event"]) == ("apps.audit.tasks", f"task saw {REDACTED}")
