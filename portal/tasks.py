from celery import shared_task
from django.utils import timezone


@shared_task(name="portal.tasks.heartbeat")
def heartbeat() -> str:
    """Prove the broker, worker and beat are connected; later issues add the real tasks."""
    return timezone.now().isoformat()
