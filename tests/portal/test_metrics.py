"""/metrics: Prometheus text for who may scrape it, a 404 for everyone else."""

import ipaddress
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit import services as audit_services
from tests.factories import TokenGrantFactory

pytestmark = pytest.mark.django_db


def scrape(client, address="127.0.0.1", **headers):
    return client.get("/metrics", REMOTE_ADDR=address, HTTP_HOST="10.1.2.3:8000", **headers)


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample line, or None when it is absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        if base == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    return None


def test_loopback_scrapes_tokens_active_and_task_runs(client, two_orgs):
    alpha, bravo = two_orgs
    TokenGrantFactory(organization=alpha.organization)
    TokenGrantFactory(organization=alpha.organization)
    TokenGrantFactory(
        organization=bravo.organization, requested_at=timezone.now() - timedelta(hours=2)
    )
    audit_services.cleanup_run_record(
        "expire_grants", lambda tally: audit_services.grants_expire(tally=tally)
    )

    response = scrape(client)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert sample(text, "ephemera_tokens_active", organization="alpha") == 2
    assert sample(text, "ephemera_tokens_active", organization="bravo") is None  # expired
    assert sample(text, "ephemera_task_runs_total", task="expire_grants", status="ok") == 1
    assert sample(text, "ephemera_task_runs_total", task="expire_grants", status="failed") == 0
    assert "# TYPE ephemera_token_issuances_total counter" in text
    assert "# TYPE ephemera_upstream_latency_seconds histogram" in text


def test_anyone_else_sees_nothing_there(client, settings):
    settings.METRICS_TOKEN = "scrape-" + "s" * 30

    assert scrape(client, address="203.0.113.9").status_code == 404
    assert scrape(client, "203.0.113.9", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    allowed = scrape(
        client, address="203.0.113.9", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}"
    )
    assert allowed.status_code == 200


def test_an_allowed_network_may_scrape_without_a_token(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]

    assert scrape(client, address="10.20.30.40").status_code == 200
    assert scrape(client, address="127.0.0.1").status_code == 404
