"""A small SVG renderer for drill charts: line charts on a time axis, a fault window
shaded, event markers. Self-contained (no script, no font, no external reference),
sized by ``viewBox`` so a chart never overflows its container.

Why not a library: matplotlib is not a dependency of regionkit and is a large
install with a slow import; by default its SVG backend draws text as glyph
paths, so a chart weighs tens of KB. pygal is not available from the package
lists this project uses. A drill needs four line charts; this module is under
200 lines, imports only the standard library (``python -X importtime``: a few
ms), and a chart is 3 to 4 KB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

__all__ = ["Marker", "line_chart", "nice_ticks"]

PALETTE = (
    "#0969da",
    "#cf222e",
    "#1a7f37",
    "#8250df",
    "#bf8700",
    "#0a7e8c",
    "#d4418e",
    "#57606a",
    "#fb8f44",
    "#4d2d00",
    "#6e7781",
    "#116329",
)
W, H = 720, 250
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 30, 30


@dataclass(frozen=True)
class Marker:
    t: float
    label: str
    colour: str = "#57606a"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = [round(first, 10)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _num(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


@dataclass(frozen=True)
class _Frame:
    """The plot area: data coordinates to SVG coordinates."""

    x_lo: float
    x_hi: float
    y_top: float
    pw: int = W - LEFT - RIGHT
    ph: int = H - TOP - BOTTOM

    def x(self, t: float) -> float:
        return LEFT + (t - self.x_lo) / (self.x_hi - self.x_lo) * self.pw

    def y(self, v: float) -> float:
        return TOP + self.ph - v / self.y_top * self.ph


def line_chart(
    title: str,
    series: Mapping[str, Sequence[float | None]],
    *,
    t0: float,
    dt: float,
    unit: str,
    windows: Sequence[tuple[float, float]] = (),
    markers: Sequence[Marker] = (),
    t_end: float | None = None,
    connect_gaps: bool = False,
) -> str:
    """An SVG line chart: one line per series, points at bucket centres from ``t0``.

    A bucket without data (None) breaks the line, unless ``connect_gaps`` (for
    sampled figures such as lag, where a missing sample is not a zero).
    """
    n = max((len(v) for v in series.values()), default=0)
    x_hi = t_end if t_end is not None else t0 + n * dt
    x_lo = min([t0] + [a for a, _ in windows])
    x_hi = max([x_hi, x_lo + 1e-6] + [b for _, b in windows] + [m.t for m in markers])
    values = [v for vs in series.values() for v in vs if v is not None]
    y_hi = max(values, default=1.0) or 1.0
    yt = nice_ticks(0.0, y_hi)
    xt = nice_ticks(x_lo, x_hi, 8)
    frame = _Frame(min(x_lo, xt[0]), max(x_hi, xt[-1]), yt[-1])
    pw, ph = frame.pw, frame.ph

    per_row = 3
    rows = max(1, math.ceil(len(series) / per_row))
    height = H + 18 * rows
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" '
        f'role="img" aria-label={quoteattr(title)} class="chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="18" font-size="14" font-weight="600">{escape(title)}'
        f'<tspan font-weight="400" fill="#57606a"> ({escape(unit)})</tspan></text>',
    ]
    out += _axes(frame, windows, yt, xt)
    for m in markers:
        out.append(
            f'<line x1="{frame.x(m.t):.1f}" x2="{frame.x(m.t):.1f}" y1="{TOP}" y2="{TOP + ph}" '
            f'stroke="{m.colour}" stroke-dasharray="4 3"/>'
            f'<text x="{frame.x(m.t) + 3:.1f}" y="{TOP + ph - 4}" font-size="11" '
            f'fill="{m.colour}">{escape(m.label)}</text>'
        )
    for i, (name, vs) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        out += _lines(frame, vs, colour, t0=t0, dt=dt, connect_gaps=connect_gaps)
        lx = LEFT + (i % per_row) * (pw / per_row)
        ly = H + 4 + 18 * (i // per_row)
        out.append(
            f'<rect x="{lx:.1f}" y="{ly - 9}" width="12" height="4" fill="{colour}"/>'
            f'<text x="{lx + 16:.1f}" y="{ly - 4}" font-size="11">{escape(name)}</text>'
        )
    if not values:
        out.append(
            f'<text x="{LEFT + pw / 2:.1f}" y="{TOP + ph / 2:.1f}" font-size="12" '
            'text-anchor="middle" fill="#57606a">no data in this drill</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _axes(
    frame: _Frame, windows: Sequence[tuple[float, float]], yt: list[float], xt: list[float]
) -> list[str]:
    """The fault windows, the grid with its tick labels, and the two axes."""
    out: list[str] = []
    x, y, ph = frame.x, frame.y, frame.ph
    for a, b in windows:
        out.append(
            f'<rect x="{x(a):.1f}" y="{TOP}" width="{max(1.0, x(b) - x(a)):.1f}" '
            f'height="{ph}" fill="#ff8182" fill-opacity="0.18"/>'
        )
        out.append(
            f'<text x="{x(a) + 3:.1f}" y="{TOP + 12}" font-size="11" fill="#a40e26">fault</text>'
        )
    for v in yt:
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#d8dee4" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{_num(v)}</text>'
        )
    for t in xt:
        if frame.x_lo <= t <= frame.x_hi:
            out.append(
                f'<text x="{x(t):.1f}" y="{TOP + ph + 16}" font-size="11" '
                f'text-anchor="middle">{_num(t)}</text>'
            )
    out.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + ph}" stroke="#57606a"/>'
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}" stroke="#57606a"/>'
    )
    return out


def _lines(
    frame: _Frame,
    vs: Sequence[float | None],
    colour: str,
    *,
    t0: float,
    dt: float,
    connect_gaps: bool,
) -> list[str]:
    """One series: a polyline per run of points (a dot for a lone point)."""
    runs: list[list[str]] = [[]]
    for k, point in enumerate(vs):
        if point is None:
            if not connect_gaps:
                runs.append([])
            continue
        runs[-1].append(f"{frame.x(t0 + (k + 0.5) * dt):.1f},{frame.y(point):.1f}")
    out: list[str] = []
    for pts in runs:
        if len(pts) == 1:
            cx, cy = pts[0].split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
        elif pts:
            out.append(
                f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}" '
                'stroke-width="2" stroke-linejoin="round"/>'
            )
    return out
