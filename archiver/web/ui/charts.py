"""Charts as plain geometry for the templates to draw as inline SVG: no JavaScript, no library.

A Chart holds its series already scaled to the drawing's pixels, with each point's value and
label kept for its tooltip (an SVG <title>), so a page reads at a glance and every number is
still there on hover. Pure functions: the pages hand in rows read from the archive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

# About the width a page draws it at, so the labels stay at their font size.
WIDTH, HEIGHT = 1100, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 28  # room for the axis labels


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    value: float
    label: str  # the x value as a person reads it (a day, an hour)


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # the class that colours it (static/style.css)
    points: list[Point]
    bars: bool = False
    offset: float = 0.0  # a bar's left edge from its point's x (bars of several series sit side by side)

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    series: list[Series]
    y_ticks: list[tuple[float, str]]  # (pixel y, label)
    x_ticks: list[tuple[float, str]]
    bar_width: float = 0.0
    width: int = WIDTH
    height: int = HEIGHT
    baseline: float = HEIGHT - BOTTOM
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)


def format_value(value: float, unit: str) -> str:
    """A number as an axis or a tooltip shows it: seconds as 1.5 s / 3.2 min / 2.1 h, counts with separators."""
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 120:
            return f"{value / 60:.1f} min"
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _nice_top(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^n at or above `value` (the y axis' top)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def chart(title: str, unit: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float | None], bool]],
          notes: Sequence[str] = (), tick: Callable[[str], str] = lambda label: label) -> Chart:
    """A chart of one or more series over the same x positions (`labels`); None leaves a point out.

    Each series is (name, css class, values, drawn as bars); `tick` shortens a label for the x axis.
    """
    n = len(labels)
    values = [v for _, _, vs, _ in series for v in vs if v is not None]
    top = _nice_top(max(values, default=0.0))
    if unit != "s":
        top = max(top, 4.0)  # counts: whole-number ticks
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(n, 1)

    def x(i: int) -> float:
        return LEFT + slot * (i + 0.5)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    bar_count = sum(1 for _, _, _, b in series if b)
    bar_width = slot * 0.8 / max(bar_count, 1)
    drawn, k = [], 0
    for name, css, vs, bars in series:
        points = [Point(x(i), y(v), v, labels[i]) for i, v in enumerate(vs) if v is not None]
        drawn.append(Series(name, css, points, bars, -slot * 0.4 + k * bar_width))
        k += 1 if bars else 0
    y_ticks = [(y(top * k / 4), format_value(top * k / 4, unit)) for k in range(5)]
    every = max(1, -(-n // 10))
    x_ticks = [(x(i), tick(labels[i])) for i in range(0, n, every)]
    return Chart(title, unit, drawn, y_ticks, x_ticks, bar_width=bar_width, notes=list(notes))


def day_label(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def hour_label(moment: datetime) -> str:
    return moment.strftime("%m-%d %H:00")


def short_day(label: str) -> str:
    """2026-11-02 -> 11-02 for an axis (the tooltip keeps the year)."""
    return label[5:] if len(label) == 10 else label
