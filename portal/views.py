"""Probes for load balancers and orchestrators; ProbeMiddleware answers them ahead of the rest."""

from django.http import HttpRequest, JsonResponse

from portal.health import readiness


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches nothing else, so a slow database never kills it."""
    return _no_store(JsonResponse({"status": "ok"}))


async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 503 naming the dependencies that are down, so traffic goes elsewhere.

    The answer is this process's latest check run, at most a second old (``portal.health``):
    however many probes ask, the dependencies are checked about once a second.
    """
    checks = await readiness()
    down = [name for name, up in checks.items() if not up]
    body = {
        "status": "unavailable" if down else "ok",
        "checks": {name: "ok" if up else "down" for name, up in checks.items()},
        "down": down,
    }
    return _no_store(JsonResponse(body, status=503 if down else 200))


def _no_store(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "no-store"
    return response
