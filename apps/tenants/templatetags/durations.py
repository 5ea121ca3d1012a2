"""Durations as people read them, for the member's page: "30 minutes", not "1800 s"."""

from django import template

register = template.Library()

_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


@register.filter
def duration(seconds: int) -> str:
    """``5400`` -> "1 hour 30 minutes": the largest unit and the next one down, as a token's
    windows need; "about" when smaller units are left out (``3601`` -> "about 1 hour")."""
    seconds = int(seconds)
    if seconds <= 0:
        return "0 seconds"
    index = next(i for i, (_, size) in enumerate(_UNITS) if seconds >= size)
    parts = []
    for name, size in _UNITS[index : index + 2]:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    text = " ".join(parts)
    return f"about {text}" if seconds else text
