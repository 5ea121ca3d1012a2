"""Hostile query strings never make the admin answer 500 (issue 19).

A table of crafted parameters (bad dates and ids, unicode digits, huge integers, NUL bytes,
ad-hoc lookups on every field of a grant, regexes, page and ordering junk, 100 KB values) is
fed to the grants changelist and both exports, to the other audit admins and the dashboard,
and to every registered admin's changelist. The answer may be the list, the admin's "invalid
filter" redirect (``?e=1``) or a 400 with a message; never a 5xx, never a traceback. NUL is
where the databases differ: SQLite stores it, psycopg refuses it in any string.
"""

from urllib.parse import quote, urlencode

import pytest
from django.contrib import admin
from django.db import transaction
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditSeal, CleanupRun, PolicyChange, TokenGrant
from apps.tenants.models import Role
from tests.conftest import make_world
from tests.factories import TokenGrantFactory

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999999"
LONG = "a" * 100_000
CATASTROPHIC = "^(a+)+$"


def _field_lookups() -> list[tuple[str, str]]:
    """``__contains`` / ``__icontains`` / ``__startswith`` on every field of a grant."""
    names = sorted({field.name for field in TokenGrant._meta.get_fields()})
    return [
        (f"{name}__{lookup}", "x")
        for name in names
        for lookup in ("contains", "icontains", "startswith")
    ]


# (query string, or a list of (name, value) pairs)
HOSTILE: list[str | list[tuple[str, str]]] = [
    "app=²",
    "app=٣",
    "app=-1",
    f"app={HUGE}",
    "app=%00",
    "app=1%00",
    f"app={LONG}",
    "profile=²",
    "profile=-1",
    f"profile={HUGE}",
    "profile=%00",
    "from=2026-02-30",
    "from=2026-13-01",
    "to=2026-02-30",
    "from=٢٠٢٦-٠١-٠١",
    "from=0000-01-01",
    "to=9999-12-31",
    "from=%00",
    "to=2026-01-01%00",
    f"from={LONG}",
    "outcome=%00",
    "outcome__exact=%00",
    "lifecycle=%00",
    f"outcome={LONG}",
    "outcome__isnull=%00",
    "requested_at__year=²",
    f"requested_at__year={HUGE}",
    "requested_at__year=9999",
    "requested_at__year=9999&requested_at__month=12",
    "requested_at__year=2026&requested_at__month=13",
    "requested_at__year=2026&requested_at__month=2&requested_at__day=30",
    "requested_at__day=٣",
    "requested_at__year=%00",
    "hour=%00",
    "hours=²",
    "hour=9999-12-31T23&hours=2",
    "hour=2026-02-30T01",
    "end_user=%00",
    f"end_user={LONG}",
    "outcomes=%00",
    "request_body__contains=x",
    f"end_user__regex={quote(CATASTROPHIC)}",
    f"end_user__iregex={quote(CATASTROPHIC)}",
    "end_user__regex=(",
    "id__in=",
    "public_id__in=",
    f"id={HUGE}",
    "id=-1",
    f"pk={HUGE}",
    "organization=2",
    "organization__id__exact=²",
    "client_app__name=x",
    "member__password__startswith=x",
    "o=999",
    "o=-999",
    "o=abc",
    "o=1.%00.-",
    f"o={HUGE}",
    "p=-1",
    "p=abc",
    f"p={HUGE}",
    "p=%00",
    "q=%00",
    "q=a%00b",
    f"q={LONG}",
    "e=",
    "e=1",
    "e=%00",
    "e=1&from=2026-02-30",
    "_changelist_filters=app%3D%C2%B2",
    "_changelist_filters=%00",
    "_to_field=%00",
    "_to_field=password",
    "_popup=1&_to_field=id",
    "all=",
    "_facets=1",
    "_facets=1&app=²",
    "%00=1",
    "app%00=1",
    *[[(name, "\x00")] for name in ("app", "profile", "from", "to", "outcome", "lifecycle", "q")],
    *[[(name, value)] for name, value in _field_lookups()],
]


def _label(case) -> str:
    text = case if isinstance(case, str) else urlencode(case)
    return text if len(text) < 60 else f"{text[:40]}…({len(text)})"


def _url(path: str, case) -> str:
    return f"{path}?{case if isinstance(case, str) else urlencode(case)}"


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Alpha and Bravo with their audit trails, built once for the module (the checks only
    read); the module's outer transaction is rolled back at the end."""
    with django_db_blocker.unblock(), transaction.atomic():
        alpha = make_world("Alpha", with_audit_trail=True)
        make_world("Bravo", with_audit_trail=True)
        TokenGrantFactory(organization=alpha.organization, end_user="a" * 24 + "b")
        yield alpha
        transaction.set_rollback(True)


def _client(world, role=Role.AUDITOR) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(world.users[role])
    return client


def assert_no_server_error(response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code}"
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"Traceback" not in body, what


ENDPOINTS = {
    "changelist": "admin:audit_tokengrant_changelist",
    "csv": "admin:audit_tokengrant_export_csv",
    "jsonl": "admin:audit_tokengrant_export_jsonl",
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("case", HOSTILE, ids=_label)
def test_hostile_parameters_never_break_the_grants_pages(world, db, endpoint, case):
    url = _url(reverse(ENDPOINTS[endpoint]), case)

    response = _client(world).get(url)

    assert_no_server_error(response, f"{endpoint} {_label(case)}")
    if endpoint != "changelist":
        assert response.status_code in (200, 400), response
        if response.status_code == 400:
            assert b"filter" in response.content.lower()


INVALID_FILTERS = [
    "app=²",
    f"app={HUGE}",
    "app=-1",
    "profile=%00",
    "from=2026-02-30",
    "from=2026-13-01",
    "to=9999-12-31",
    "outcome=%00",
    f"requested_at__year={HUGE}",
    "requested_at__year=9999&requested_at__month=12",
]


@pytest.mark.parametrize("case", INVALID_FILTERS)
def test_a_bad_date_or_id_is_the_admins_invalid_filter(world, db, case):
    client = _client(world)
    changelist = client.get(_url(reverse(ENDPOINTS["changelist"]), case))
    assert changelist.status_code == 302
    assert changelist["Location"].endswith("?e=1")
    for fmt in ("csv", "jsonl"):
        exported = client.get(_url(reverse(ENDPOINTS[fmt]), case))
        assert exported.status_code == 400
        assert b"These filters are not valid" in exported.content


@pytest.mark.parametrize(
    "case",
    [
        "request_body__contains=x",
        f"end_user__iregex={quote(CATASTROPHIC)}",
        "member__password__startswith=x",
        "id__in=",
        "organization=2",
        "_changelist_filters=x",
    ],
)
def test_a_lookup_the_page_does_not_offer_is_refused_with_a_message(world, db, case):
    client = _client(world)

    changelist = client.get(_url(reverse(ENDPOINTS["changelist"]), case), follow=True)
    assert changelist.redirect_chain[-1][0].endswith("?e=1")
    assert "not a filter this page offers" in changelist.content.decode()
    for fmt in ("csv", "jsonl"):
        exported = client.get(_url(reverse(ENDPOINTS[fmt]), case))
        assert exported.status_code == 400
        assert b"not a filter this page offers" in exported.content


def test_the_filters_offered_still_work(world, db):
    client = _client(world)
    url = reverse(ENDPOINTS["changelist"])
    grant = world.grant
    for query in (
        {"app": grant.client_app_id},
        {"profile": grant.profile_id},
        {"outcome": "issued"},
        {"outcome__exact": "issued", "lifecycle__exact": "active"},
        {"from": f"{grant.requested_at:%Y-%m-%d}", "to": f"{grant.requested_at:%Y-%m-%d}"},
        {"requested_at__year": grant.requested_at.year},
        {"q": grant.end_user},
        {"o": "1", "p": "1"},
    ):
        response = client.get(url, query)
        assert response.status_code == 200, query
        assert grant in response.context["cl"].result_list, query

    csv_text = b"".join(
        client.get(reverse(ENDPOINTS["csv"]), {"app": grant.client_app_id}).streaming_content
    ).decode()
    assert str(grant.public_id) in csv_text


OTHER_AUDIT_HOSTILE = [
    "o=999",
    "p=-1",
    "q=%00",
    "%00=1",
    "action=%00",
    "action__exact=%00",
    "object_type__regex=(",
    "before__contains=x",
    "task=%00",
    "task__exact=%00",
    "grants_purged_at__isempty=%00",
    "grants_purged_at__isempty=2",
    "sealed_at__year=²",
    f"sealed_at__year={HUGE}",
    "occurred_at__year=9999&occurred_at__month=12",
    "started_at__year=9999",
    f"sequence={HUGE}",
    "hash__contains=x",
    f"q={LONG}",
]


@pytest.mark.parametrize("model", [PolicyChange, AuditSeal, CleanupRun])
@pytest.mark.parametrize("case", OTHER_AUDIT_HOSTILE, ids=_label)
def test_hostile_parameters_never_break_the_other_audit_lists(world, db, model, case):
    opts = model._meta
    url = _url(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"), case)

    assert_no_server_error(_client(world).get(url), f"{opts.label} {_label(case)}")


@pytest.mark.parametrize("case", ["days=%00", f"days={HUGE}", "app=²", "%00=1", f"q={LONG}"])
def test_hostile_parameters_never_break_the_dashboard(world, db, case):
    url = _url(reverse("admin:audit_tokengrant_dashboard"), case)

    assert_no_server_error(_client(world).get(url), _label(case))


EVERY_ADMIN_HOSTILE = [
    "%00=1",
    "q=%00",
    "o=999",
    "p=-1",
    "p=abc",
    "e=1",
    "_changelist_filters=%00",
    "id__in=",
    f"id={HUGE}",
    "organization__id__exact=²",
    "organization__id__exact=%00",
    "name__iregex=(",
    "is_active__exact=%00",
    "is_active__exact=maybe",
    "role__exact=%00",
    "client_app__id__exact=²",
    f"client_app__id__exact={HUGE}",
    "allowed_profiles__id__exact=%00",
    "profile__isnull=%00",
    "dns=%00",
    "created_at__gte=2026-02-30",
]


def registered_models():
    return sorted(admin.site._registry, key=lambda model: model._meta.label_lower)


def changelist_url(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.OWNER])
@pytest.mark.parametrize("model", registered_models(), ids=lambda m: m._meta.label)
def test_hostile_parameters_never_break_any_admin(world, db, model, role):
    client = _client(world, role)
    for case in EVERY_ADMIN_HOSTILE:
        response = client.get(_url(changelist_url(model), case))
        assert_no_server_error(response, f"{model._meta.label} {_label(case)}")


@pytest.mark.parametrize("model", registered_models(), ids=lambda m: m._meta.label)
def test_hostile_parameters_never_break_any_admin_for_the_operator(world, operator, model):
    """The operator opens every admin, Django's and allauth's included."""
    client = Client(raise_request_exception=False)
    client.force_login(operator)
    for case in [*EVERY_ADMIN_HOSTILE, "username__iregex=(", "email__regex=(", f"q={LONG}"]:
        response = client.get(_url(changelist_url(model), case))
        assert_no_server_error(response, f"operator {model._meta.label} {_label(case)}")


@pytest.mark.parametrize(
    "model",
    registered_models(),
    ids=lambda model: model._meta.label,
)
def test_a_100_kb_search_is_refused_on_any_admin(world, db, model):
    response = _client(world, Role.OWNER).get(_url(changelist_url(model), f"q={LONG}"))

    assert_no_server_error(response, f"{model._meta.label} q=100 KB")


def test_a_100_kb_search_says_it_is_too_long(world, db):
    response = _client(world).get(reverse(ENDPOINTS["changelist"]), {"q": LONG})

    assert response.status_code == 200
    assert "at most 500 characters" in response.content.decode()
    assert world.grant in response.context["cl"].result_list  # nothing was searched
