"""JSON snapshots of model rows for the audit trail, with secrets replaced by a marker."""

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model

REDACTED = "[redacted]"


def snapshot(instance: Model | None) -> dict[str, Any] | None:
    """Every concrete field (foreign keys as ids) plus declared many-to-many fields.

    A model lists secret fields in ``audit_redacted_fields``; their values never reach the
    audit trail, only whether they are set.
    """
    if instance is None:
        return None
    redacted = set(getattr(instance, "audit_redacted_fields", ()))
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        value = getattr(instance, field.attname)
        if field.name in redacted:
            value = REDACTED if value else None
        data[field.name] = value
    if instance.pk is not None:
        for name in getattr(instance, "audit_m2m_fields", ()):
            data[name] = sorted(getattr(instance, name).values_list("pk", flat=True))
    # Round-trip through JSON so dates, decimals and UUIDs are stored as the DB will hold them.
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))
