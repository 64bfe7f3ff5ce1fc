"""An SVG chart of a simulation: panels stacked over one time axis (no plotting library).

Each panel has a title, a unit and a few series; the y axis of a panel starts at 0 and ends
at a round number above its largest finite value. Infinite values (no instance serving) are
drawn at the top edge, so an outage shows as a line pinned to the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH = 960
PANEL_HEIGHT = 200
MARGIN_LEFT = 80
MARGIN_RIGHT = 170  # legend
MARGIN_TOP = 40
PANEL_GAP = 50
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float]
    step: bool = False  # instance counts change in steps, not along slopes


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    unit: str
    series: Sequence[Series]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ ``value`` (an axis top)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10.0**exponent
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exponent + 1)


TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200,
              86400)  # seconds: round numbers on a clock


def time_ticks(end: float, most: int = 8) -> list[float]:
    """Tick times from 0 to ``end`` at the first round step that gives at most ``most``."""
    step = next((s for s in TICK_STEPS if end / s <= most), TICK_STEPS[-1])
    return [k * step for k in range(int(end // step) + 1)]


def _label(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def render_svg(title: str, times: Sequence[float], panels: Sequence[Panel]) -> str:
    """The whole chart; ``times`` in seconds, every series as long as ``times``."""
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    height = MARGIN_TOP + len(panels) * (PANEL_HEIGHT + PANEL_GAP) + 10
    end = times[-1] if times and times[-1] > 0 else 1.0
    minutes = end >= 120
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{MARGIN_LEFT}" y="22" font-size="16" font-weight="bold">'
           f'{escape(title)}</text>']

    def x_of(t: float) -> float:
        return MARGIN_LEFT + plot_width * t / end

    for index, panel in enumerate(panels):
        top = MARGIN_TOP + index * (PANEL_HEIGHT + PANEL_GAP) + 15
        bottom = top + PANEL_HEIGHT
        finite = [v for s in panel.series for v in s.values if math.isfinite(v)]
        y_max = nice_ceiling(max(finite, default=1.0))

        def y_of(v: float, top: float = top, bottom: float = bottom, y_max: float = y_max) \
                -> float:
            v = y_max if not math.isfinite(v) else min(v, y_max)
            return bottom - (bottom - top) * v / y_max

        out.append(f'<text x="{MARGIN_LEFT}" y="{top - 6}" font-weight="bold">'
                   f'{escape(panel.title)} ({escape(panel.unit)})</text>')
        for k in range(5):
            v = y_max * k / 4
            y = y_of(v)
            out.append(f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_width}" y1="{y:.1f}" '
                       f'y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                       f'{_label(v)}</text>')
        for t in time_ticks(end):
            x = x_of(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="#eee"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">'
                       f'{_label(t / 60 if minutes else t)}{"m" if minutes else "s"}</text>')
        out.append(f'<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_width}" '
                   f'height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>')
        for number, series in enumerate(panel.series):
            color = PALETTE[number % len(PALETTE)]
            points = _points(times, series, x_of, y_of)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" '
                       f'points="{points}"/>')
            ly = top + 14 + 18 * number
            lx = MARGIN_LEFT + plot_width + 12
            out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" '
                       f'stroke="{color}" stroke-width="3"/>')
            out.append(f'<text x="{lx + 24}" y="{ly}">{escape(series.name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _points(times: Sequence[float], series: Series, x_of: Callable[[float], float],
            y_of: Callable[[float], float]) -> str:
    coords: list[str] = []
    previous_y: float | None = None
    for t, v in zip(times, series.values, strict=True):
        x, y = x_of(t), y_of(v)
        if series.step and previous_y is not None and y != previous_y:
            coords.append(f"{x:.1f},{previous_y:.1f}")
        coords.append(f"{x:.1f},{y:.1f}")
        previous_y = y
    return " ".join(coords)
