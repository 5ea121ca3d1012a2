"""Server-rendered SVG charts: no script, no CDN, nothing the Content-Security-Policy must allow."""

from dataclasses import dataclass

from apps.audit.selectors import DayUsage

WIDTH, HEIGHT, GUTTER = 720, 180, 2
SERIES = (("issued", "#2e7d32"), ("denied", "#f9a825"), ("errors", "#c62828"))


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    color: str
    label: str


def stacked_bars(days: list[DayUsage]) -> dict:
    """Geometry for one stacked bar per day (issued, denied, errors), scaled to the busiest."""
    peak = max((day.total for day in days), default=0) or 1
    step = WIDTH / max(len(days), 1)
    segments = []
    for index, day in enumerate(days):
        top = HEIGHT
        for name, color in SERIES:
            value = getattr(day, name)
            if not value:
                continue
            height = HEIGHT * value / peak
            top -= height
            segments.append(
                Segment(
                    x=round(index * step + GUTTER / 2, 2),
                    y=round(top, 2),
                    width=round(step - GUTTER, 2),
                    height=round(height, 2),
                    color=color,
                    label=f"{day.day:%Y-%m-%d}: {value} {name}",
                )
            )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "segments": segments,
        "peak": peak if any(day.total for day in days) else 0,
        "legend": SERIES,
        "first": days[0].day if days else None,
        "last": days[-1].day if days else None,
    }
