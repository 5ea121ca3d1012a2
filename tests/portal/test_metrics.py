"""/metrics: Prometheus text for who may scrape it, a 404 for everyone else."""

import ipaddress
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.db.utils import ConnectionHandler
from django.utils import timezone

from apps.audit import services as audit_services
from apps.audit.models import AuditSeal, CleanupRun, PolicyChange
from apps.issuance import lifecycle
from apps.policies import services as policy_services
from portal import health
from tests.factories import OrganizationFactory, TokenGrantFactory

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
        "expire_grants", lambda tally: lifecycle.grants_expire(tally=tally)
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


def finished_run(task: str, *, fails: bool = False):
    """One run of a task through the service the Celery task calls, failing if asked."""

    def work(tally):
        if fails:
            raise RuntimeError("the work broke")

    if fails:
        with pytest.raises(RuntimeError):
            audit_services.cleanup_run_record(task, work)
        return CleanupRun.objects.get(task=task, organization=None, error__startswith="Runtime")
    return audit_services.cleanup_run_record(task, work)


def test_each_task_reports_its_newest_run_and_newest_success(client):
    expired = finished_run("expire_grants")
    sealed = finished_run("seal_audit")
    failed = finished_run("seal_audit", fails=True)

    text = scrape(client).content.decode()

    assert sample(
        text, "ephemera_task_last_run_timestamp_seconds", task="expire_grants"
    ) == same_moment(expired.finished_at.timestamp())
    assert sample(text, "ephemera_task_last_run_failed", task="expire_grants") == 0
    assert sample(
        text, "ephemera_task_last_success_timestamp_seconds", task="expire_grants"
    ) == same_moment(expired.finished_at.timestamp())
    assert sample(
        text, "ephemera_task_last_run_timestamp_seconds", task="seal_audit"
    ) == same_moment(failed.finished_at.timestamp())
    assert sample(text, "ephemera_task_last_run_failed", task="seal_audit") == 1
    assert sample(
        text, "ephemera_task_last_success_timestamp_seconds", task="seal_audit"
    ) == same_moment(sealed.finished_at.timestamp())
    assert sample(text, "ephemera_task_last_run_timestamp_seconds", task="purge_grants") is None


def test_a_task_that_has_only_failed_has_no_last_success(client):
    finished_run("purge_grants", fails=True)

    text = scrape(client).content.decode()

    assert sample(text, "ephemera_task_last_run_failed", task="purge_grants") == 1
    assert sample(text, "ephemera_task_last_success_timestamp_seconds", task="purge_grants") is None


def seal_everything_so_far(organization) -> None:
    """seal_audit's work for one organisation, run late enough that every record has settled."""
    audit_services.audit_seal_organization(
        organization=organization, now=timezone.now() + timedelta(minutes=2)
    )


def test_seal_lag_is_the_oldest_record_each_organisation_has_not_sealed(client, two_orgs):
    alpha, bravo = two_orgs
    TokenGrantFactory(organization=alpha.organization, requested_at=ago(minutes=40))
    seal_everything_so_far(alpha.organization)
    seal_everything_so_far(bravo.organization)
    first_unsealed = TokenGrantFactory(organization=alpha.organization, requested_at=ago(minutes=9))
    TokenGrantFactory(organization=alpha.organization, requested_at=ago(minutes=1))
    never_sealed = OrganizationFactory(slug="charlie")
    oldest_of_charlie = TokenGrantFactory(organization=never_sealed, requested_at=ago(hours=3))
    TokenGrantFactory(organization=never_sealed, requested_at=ago(hours=2))

    text = scrape(client).content.decode()

    assert unsealed_since(text, "alpha") == same_moment(first_unsealed.requested_at.timestamp())
    assert unsealed_since(text, "charlie") == same_moment(
        oldest_of_charlie.requested_at.timestamp()
    )
    assert unsealed_since(text, "bravo") is None  # everything sealed


def test_an_unsealed_policy_change_counts(client, two_orgs):
    _, bravo = two_orgs
    seal_everything_so_far(bravo.organization)
    change = policy_services.quota_create(
        organization=bravo.organization,
        actor=bravo.owner,
        scope="org",
        window="hour",
        limit=1000,
    )

    text = scrape(client).content.decode()

    made = PolicyChange.objects.get(object_type="policies.quota", object_id=str(change.pk))
    assert unsealed_since(text, "bravo") == same_moment(made.occurred_at.timestamp())


def test_a_pending_grant_holding_the_chain_back_counts(client, two_orgs):
    """Asked for before the last sealed grant but written after it, then never finished."""
    alpha, _ = two_orgs
    TokenGrantFactory(organization=alpha.organization, requested_at=ago(minutes=10))
    stuck = TokenGrantFactory(
        organization=alpha.organization, requested_at=ago(minutes=11), outcome="pending"
    )
    TokenGrantFactory(organization=alpha.organization, requested_at=ago(minutes=5))
    seal_everything_so_far(alpha.organization)

    text = scrape(client).content.decode()

    assert AuditSeal.objects.get(organization=alpha.organization).grants_through_id < stuck.pk
    assert unsealed_since(text, "alpha") == same_moment(stuck.requested_at.timestamp())


def same_moment(timestamp: float):
    """A Unix time as scraped, to the microsecond (approx's default would allow half an hour)."""
    return pytest.approx(timestamp, rel=0, abs=1e-6)


def unsealed_since(text: str, organization: str) -> float | None:
    return sample(
        text, "ephemera_audit_oldest_unsealed_timestamp_seconds", organization=organization
    )


def ago(**delta) -> datetime:
    return timezone.now() - timedelta(**delta)


def test_readiness_is_scraped_as_one_gauge_per_check(client, settings, closed_port):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port}/0",
        }
    }

    text = scrape(client).content.decode()

    assert sample(text, "ephemera_ready", check="database") == 1
    assert sample(text, "ephemera_ready", check="cache") == 0
    assert sample(text, "ephemera_ready", check="broker") == 1


def test_a_scrape_reuses_the_answer_readyz_just_gave(client, monkeypatch):
    monkeypatch.setattr(health, "_clock", lambda: 1000.0)  # both calls within one second
    calls = Counter()
    for name, check in list(health.READINESS_CHECKS.items()):
        monkeypatch.setitem(
            health.READINESS_CHECKS, name, lambda n=name, c=check: calls.update([n]) or c()
        )

    probed = client.get("/readyz")
    text = scrape(client).content.decode()

    assert probed.status_code == 200
    assert sample(text, "ephemera_ready", check="database") == 1
    assert calls == {"database": 1, "cache": 1, "broker": 1}


def test_an_unreachable_database_leaves_its_series_out_but_still_answers(
    client, monkeypatch, closed_port
):
    """The scrape must not wait out the pool's timeout: ephemera_ready has to get through."""
    TokenGrantFactory()
    finished_run("expire_grants")
    unreachable = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "ephemera",
        "USER": "ephemera",
        "HOST": "127.0.0.1",
        "PORT": str(closed_port),
        "OPTIONS": {"connect_timeout": 1},
    }
    monkeypatch.setattr(health, "connections", ConnectionHandler({"default": unreachable}))

    response = scrape(client)

    text = response.content.decode()
    assert response.status_code == 200
    assert sample(text, "ephemera_ready", check="database") == 0
    assert sample(text, "ephemera_ready", check="cache") == 1
    assert "ephemera_tokens_active{" not in text
    assert "ephemera_task_last_run_timestamp_seconds{" not in text
    assert "# TYPE ephemera_token_issuances_total counter" in text
