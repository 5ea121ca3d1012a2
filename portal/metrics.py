"""Prometheus metrics: what the web processes count, plus what only the database knows.

Issuances, quota denials and upstream latency are counted where they happen. With several
web workers set ``PROMETHEUS_MULTIPROC_DIR`` (deploy/ does) so every worker's counts are
summed at scrape time. Tokens active now, the background tasks' runs and how far the seal
chains trail the audit trail are read from the database when scraped: the Celery worker is
another process (often another machine), and the tables already record it all. Those
reads go through indexes; none scans the grants table, which can hold millions of rows.
This process's readiness is /readyz's own answer, shared with the probes.

deploy/prometheus/alerts.yml alerts on these series.
"""

import ipaddress
import os
import secrets
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from portal.health import readiness_blocking

TOKEN_ISSUANCES = Counter(
    "ephemera_token_issuances",
    "Token requests by organisation, outcome (issued, denied_quota, denied_policy, "
    "upstream_error, abandoned) and profile.",
    ["organization", "outcome", "profile"],
)
QUOTA_DENIALS = Counter(
    "ephemera_quota_denials",
    "Token requests refused by a quota, by organisation and the limit that refused them.",
    ["organization", "limit"],
)
UPSTREAM_LATENCY = Histogram(
    "ephemera_upstream_latency_seconds",
    "Time Google (or the sandbox) took to mint a token, by result (ok or an error code).",
    ["result"],
    buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30),
)


RUN = DurationField()


class DatabaseCollector:
    """Gauges and counters read from the database at scrape time.

    Read only when this process's readiness check has just reached the database: otherwise
    each query would wait out the connection pool's timeout, the scrape would time out, and
    ``ephemera_ready{check="database"} 0``, the one series that says why, would be lost.
    """

    def describe(self):
        """The metric names, without a query: registering must not touch the database."""
        return [
            GaugeMetricFamily("ephemera_tokens_active", "", labels=["organization"]),
            CounterMetricFamily("ephemera_task_runs", "", labels=["task", "status"]),
            CounterMetricFamily("ephemera_task_run_seconds", "", labels=["task"]),
            GaugeMetricFamily("ephemera_task_last_run_timestamp_seconds", "", labels=["task"]),
            GaugeMetricFamily("ephemera_task_last_run_failed", "", labels=["task"]),
            GaugeMetricFamily("ephemera_task_last_success_timestamp_seconds", "", labels=["task"]),
            GaugeMetricFamily(
                "ephemera_audit_oldest_unsealed_timestamp_seconds", "", labels=["organization"]
            ),
        ]

    def collect(self):
        if not readiness_blocking()["database"]:
            return
        from apps.audit.models import CleanupRun
        from apps.audit.selectors import (
            audit_oldest_unsealed_by_organization,
            task_run_states,
            tokens_active_by_organization,
        )

        active = GaugeMetricFamily(
            "ephemera_tokens_active",
            "Issued tokens not yet expired, by organisation.",
            labels=["organization"],
        )
        for slug, count in tokens_active_by_organization(now=timezone.now()).items():
            active.add_metric([slug], count)
        yield active

        runs = CounterMetricFamily(
            "ephemera_task_runs",
            "Background task runs by task and status (ok or failed).",
            labels=["task", "status"],
        )
        seconds = CounterMetricFamily(
            "ephemera_task_run_seconds", "Time spent in background task runs.", labels=["task"]
        )
        totals = (
            CleanupRun.objects.filter(organization=None, finished_at__isnull=False)
            .values("task")
            .annotate(
                runs=Count("id"),
                failed=Count("id", filter=~Q(error="")),
                spent=Sum(ExpressionWrapper(F("finished_at") - F("started_at"), output_field=RUN)),
            )
            .order_by("task")
        )
        for row in totals:
            runs.add_metric([row["task"], "ok"], row["runs"] - row["failed"])
            runs.add_metric([row["task"], "failed"], row["failed"])
            seconds.add_metric([row["task"]], (row["spent"] or timedelta()).total_seconds())
        yield runs
        yield seconds

        last_run = GaugeMetricFamily(
            "ephemera_task_last_run_timestamp_seconds",
            "When each background task's newest finished run ended (Unix time).",
            labels=["task"],
        )
        last_failed = GaugeMetricFamily(
            "ephemera_task_last_run_failed",
            "1 when each background task's newest finished run failed, else 0.",
            labels=["task"],
        )
        last_success = GaugeMetricFamily(
            "ephemera_task_last_success_timestamp_seconds",
            "When each background task's newest successful run ended (Unix time).",
            labels=["task"],
        )
        for task, state in task_run_states().items():
            last_run.add_metric([task], state.last_run_at.timestamp())
            last_failed.add_metric([task], 1 if state.last_run_failed else 0)
            if state.last_success_at is not None:
                last_success.add_metric([task], state.last_success_at.timestamp())
        yield last_run
        yield last_failed
        yield last_success

        unsealed = GaugeMetricFamily(
            "ephemera_audit_oldest_unsealed_timestamp_seconds",
            "When the oldest grant or policy change not yet in the organisation's seal chain "
            "was made (Unix time); absent when everything is sealed.",
            labels=["organization"],
        )
        for slug, made_at in audit_oldest_unsealed_by_organization().items():
            unsealed.add_metric([slug], made_at.timestamp())
        yield unsealed


class ReadinessCollector:
    """``ephemera_ready{check}``: /readyz's answer in this process, from its shared run."""

    def describe(self):
        return [GaugeMetricFamily("ephemera_ready", "", labels=["check"])]

    def collect(self):
        ready = GaugeMetricFamily(
            "ephemera_ready",
            "1 when this process reaches the dependency /readyz checks (database, cache, "
            "broker), else 0.",
            labels=["check"],
        )
        for check, up in readiness_blocking().items():
            ready.add_metric([check], 1 if up else 0)
        yield ready


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
_database_collector = DatabaseCollector()
_readiness_collector = ReadinessCollector()
REGISTRY.register(_database_collector)
REGISTRY.register(_readiness_collector)


def exposition() -> bytes:
    """The metrics text: this process's registry, or every worker's under multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_database_collector)
        registry.register(_readiness_collector)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def scrape_allowed(request: HttpRequest) -> bool:
    """A bearer token (``METRICS_TOKEN``) or an address in ``METRICS_ALLOWED_NETWORKS``."""
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``; anyone not allowed sees a 404, as if there were nothing here."""
    if not scrape_allowed(request):
        return HttpResponseNotFound()
    response = HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
