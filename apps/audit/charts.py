"""Server-rendered SVG charts: no script, no CDN, nothing the Content-Security-Policy must allow.

Each bar is an ``<a>`` to the grants it counts, so the chart is also the way into the list.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

from apps.audit.selectors import BucketUsage

WIDTH, HEIGHT = 760, 250
LEFT, RIGHT, TOP, BOTTOM = 52, 34, 12, 30  # room for the y values and the x labels
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
GUTTER_SHARE = 0.2  # of each slot, left empty between bars
MAX_X_LABELS = 8
SERIES = (("issued", "#2e7d32"), ("denied", "#f9a825"), ("errors", "#c62828"))


@dataclass(frozen=True)
class Segment:
    y: float
    height: float
    color: str
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    href: str
    label: str
    segments: list[Segment]


@dataclass(frozen=True)
class Tick:
    position: float
    label: str
    minor: bool = False  # left out on a phone, where the chart is narrow


def nice_ceiling(peak: int, ticks: int = 4) -> tuple[int, int]:
    """An axis top at or above ``peak`` and its step: 1, 2 or 5 times a power of ten."""
    if peak <= 0:
        return ticks, 1
    raw = peak / ticks
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return step * math.ceil(peak / step), step


def compact(value: int) -> str:
    """An axis value short enough for the narrow margin: 950, 2.5k, 1.2M."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def bucket_name(bucket: BucketUsage, *, hourly: bool) -> str:
    return f"{bucket.start:%Y-%m-%d %H:00}" if hourly else f"{bucket.start:%Y-%m-%d}"


def _x_label(bucket: BucketUsage, previous: BucketUsage | None, hourly: bool) -> str:
    if not hourly:
        return f"{bucket.start:%b} {bucket.start.day}"
    if previous is None or previous.start.date() != bucket.start.date():
        return f"{bucket.start:%b} {bucket.start.day} {bucket.start:%H}h"
    return f"{bucket.start:%H}h"


def stacked_bars(
    buckets: list[BucketUsage], *, hourly: bool, href: Callable[[BucketUsage], str]
) -> dict:
    """One stacked bar per hour or day (issued, denied, errors) on a labelled axis.

    ``href(bucket)`` is where a bar leads: the grants list filtered to that bucket's time.
    """
    peak = max((bucket.total for bucket in buckets), default=0)
    top, step = nice_ceiling(peak)
    slot = PLOT_WIDTH / max(len(buckets), 1)
    gutter = min(slot * GUTTER_SHARE, 6)
    bottom = TOP + PLOT_HEIGHT
    bars = []
    for index, bucket in enumerate(buckets):
        if not bucket.total:
            continue
        name = bucket_name(bucket, hourly=hourly)
        segments, y = [], float(bottom)
        for series, color in SERIES:
            value = getattr(bucket, series)
            if not value:
                continue
            height = PLOT_HEIGHT * value / top
            y -= height
            segments.append(
                Segment(round(y, 2), round(height, 2), color, f"{name}: {value} {series}")
            )
        parts = ", ".join(f"{getattr(bucket, s)} {s}" for s, _ in SERIES if getattr(bucket, s))
        bars.append(
            Bar(
                x=round(LEFT + index * slot + gutter / 2, 2),
                width=round(slot - gutter, 2),
                href=href(bucket),
                label=f"{name}: {bucket.total} grants ({parts}), open the list",
                segments=segments,
            )
        )
    y_ticks = [
        Tick(round(bottom - PLOT_HEIGHT * value / top, 2), compact(value))
        for value in range(0, top + 1, step)
    ]
    every = max(1, math.ceil(len(buckets) / MAX_X_LABELS))
    x_labels = []
    for count, index in enumerate(range(len(buckets) - 1, -1, -every)):  # newest always
        bucket = buckets[index]
        earlier = buckets[index - every] if index - every >= 0 else None
        x_labels.append(
            Tick(
                round(LEFT + (index + 0.5) * slot, 2),
                _x_label(bucket, earlier, hourly),
                minor=count % 2 == 1,
            )
        )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": bottom,
        "label_y": bottom + 18,
        "plot_height": PLOT_HEIGHT,
        "middle_x": LEFT + PLOT_WIDTH / 2,
        "middle_y": TOP + PLOT_HEIGHT / 2,
        "bars": bars,
        "y_ticks": y_ticks,
        "x_labels": x_labels[::-1],
        "peak": peak,
        "legend": SERIES,
        "first": buckets[0].start if buckets else None,
        "last": buckets[-1].start if buckets else None,
    }
