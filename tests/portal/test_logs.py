"""Structured logs: one JSON line per request, fields as fields, secrets never written."""

import json
import logging

import pytest
from django.urls import reverse

from apps.tenants.models import Role
from portal.logs import REDACTED, JsonFormatter, ScrubbingFormatter, scrub


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
