"""API fuzzing (issue 6, item 7): schemathesis against the portal's own OpenAPI document.

Schemathesis reads ``/api/v1/openapi.json`` as the portal serves it, then sends every
operation generated requests, valid and invalid, with a working client key, to the portal
under uvicorn minting through the sandbox upstream. Every answer must be no 5xx and match
the document in every way schemathesis checks a response: a documented status code and
content type, a body that matches the documented schema, and the documented headers (a 429's
or 503's ``Retry-After``).

Bounded and deterministic for CI: at most ``MAX_EXAMPLES`` generated requests per operation
in the fuzzing phase, plus schemathesis' boundary-value (coverage) and schema-example
phases; the same requests on every run (derandomised, no example database), no deadline.
"""

import json
from collections import Counter

import hypothesis
import pytest
import schemathesis
from django.urls import reverse
from hypothesis import strategies as st
from ninja.responses import NinjaJSONEncoder as encoder
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.clients import services as client_services
from apps.clients.models import ClientKey
from apps.issuance.api import api as ninja_api
from tests.issuance.conftest import bearer
from tests.live import serve_portal

pytestmark = pytest.mark.django_db(transaction=True)  # the server's threads see the rows

MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # The key is ours to send (below): generated Authorization headers would only
            # test that random strings are refused.
            "with-security-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},
    }
)

PROFILE = "alpha-voice"  # two_orgs' profile for Alpha, whose key the requests carry
API_PREFIX = "/api/v1"


def openapi_document() -> dict:
    """The API's OpenAPI document, built when the module is collected.

    Not fetched from the portal: schemathesis' fixture-based loader
    (``schemathesis.pytest.from_fixture``) breaks on pytest 9.2, and importing the URLconf
    at collection time would run every app's import-time work outside a test.
    ``test_the_fuzzed_document_is_the_one_the_portal_serves`` ties the two together.
    """
    return json.loads(json.dumps(ninja_api.get_openapi_schema(path_prefix=API_PREFIX), cls=encoder))


schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


@schema.hook
def flatmap_body(context, body):
    """Random slugs only ever find no profile: half the time, ask for a real one."""
    if context.operation.path.endswith("/tokens") and isinstance(body, dict):
        return st.sampled_from([body, {**body, "profile": PROFILE}])
    return st.just(body)


@pytest.fixture
def portal(two_orgs, sandbox):
    """The portal, and the key each operation is sent: usage is read with a read key
    (an issue key is refused it), everything else with Alpha's issue key."""
    alpha, _ = two_orgs
    assert alpha.profile.slug == PROFILE
    _, read_key = client_services.client_key_create(
        organization=alpha.organization,
        client_app=alpha.client_app,
        actor=None,
        scope=ClientKey.Scope.READ_USAGE,
    )
    with serve_portal() as url:
        yield url, {"usage": read_key, None: alpha.raw_client_key}


@pytest.fixture
def answers():
    """The status codes each operation answered, checked once its examples are all run."""
    seen: dict[str, Counter] = {}
    yield seen
    tokens = seen.get("POST /api/v1/tokens")
    if tokens is not None:  # the happy path was fuzzed too, not only the refusals
        assert tokens[201], f"no token was issued while fuzzing: {dict(tokens)}"
    usage = seen.get("GET /api/v1/usage")
    if usage is not None:
        assert usage[200], f"no usage was read while fuzzing: {dict(usage)}"


@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
@schema.parametrize()
def test_every_operation_answers_within_its_contract(case, portal, answers):
    url, keys = portal
    key = keys["usage"] if case.operation.path.endswith("/usage") else keys[None]
    response = case.call_and_validate(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS
    )
    answers.setdefault(case.operation.label, Counter())[response.status_code] += 1


def test_the_fuzzed_document_is_the_one_the_portal_serves(client):
    response = client.get(reverse("api:openapi-json"))

    assert response.status_code == 200
    assert reverse("api:openapi-json") == f"{API_PREFIX}/openapi.json"
    assert response.json() == openapi_document()


# --- what the fuzzer found ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_whole_number_floats_are_integers_as_the_schema_says(api, two_orgs):
    """Found by schemathesis' positive_data_acceptance check (ST202, not run in CI: the API
    rightly refuses schema-valid requests by its own rules, e.g. unknown profiles).

    JSON Schema counts 600.0 as an integer, and Python's json.dumps(600.0) sends it so.
    """
    alpha, _ = two_orgs
    body = {"profile": PROFILE, "expire_seconds": 600.0, "uses": 1.0}

    response = await api.post(
        "/api/v1/tokens",
        json.dumps(body),
        content_type="application/json",
        headers=bearer(alpha.raw_client_key),
    )

    assert response.status_code == 201, response.json()
    fractional = {"profile": PROFILE, "expire_seconds": 600.5}
    refused = await api.post(
        "/api/v1/tokens",
        json.dumps(fractional),
        content_type="application/json",
        headers=bearer(alpha.raw_client_key),
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "expire_seconds"
