"""Durations as people read them, for the member's page: "30 minutes", not "1800 s"."""

from django import template

register = template.Library()

_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


@register.filter
def duration(seconds: int) -> str:
    """``5400`` -> "1 hour 30 minutes"; the two largest units, as a token's windows need."""
    seconds = int(seconds)
    parts = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "0 seconds"
