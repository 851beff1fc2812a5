"""Metric plots: matplotlib when it is importable, otherwise a small built-in rasteriser (5x7 font) to PNG."""

from __future__ import annotations

import math
import os

import numpy as np

from .atomic import _atomic_write
from .images import write_png

__all__ = ["plot_metrics"]


# --------------------------------------------------------------------------
# metric plots
# --------------------------------------------------------------------------

# 5x7 bitmap font, one string of seven 5-bit rows per glyph.  Lower-case
# letters are drawn with the upper-case glyphs to keep the table small.
_FONT_SRC = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}
_FONT = {
    ch: np.array([[bit == "1" for bit in row] for row in src.split()], dtype=bool)
    for ch, src in _FONT_SRC.items()
}

# Matplotlib's default "tab10" colours, so both back ends look alike.
_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def _text_width(text: str, scale: int = 1) -> int:
    return max(len(text) * 6 - 1, 0) * scale


def _draw_text(canvas, x: int, y: int, text: str, colour, scale: int = 1) -> None:
    """Draw *text* with its top-left corner at (x, y), clipped to the canvas."""
    H, W = canvas.shape[:2]
    for k, ch in enumerate(text):
        glyph = _FONT.get(ch.upper(), _FONT["?"])
        if scale > 1:
            glyph = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        gy, gx = np.nonzero(glyph)
        px, py = gx + x + k * 6 * scale, gy + y
        keep = (px >= 0) & (px < W) & (py >= 0) & (py < H)
        canvas[py[keep], px[keep]] = colour


def _draw_line(canvas, x0, y0, x1, y1, colour, width: int = 1) -> None:
    """Aliased line by dense sampling (one sample per pixel step)."""
    H, W = canvas.shape[:2]
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.rint(np.linspace(x0, x1, n)).astype(np.int64)
    ys = np.rint(np.linspace(y0, y1, n)).astype(np.int64)
    for d in range(width):
        # thicken perpendicular-ish: vertical offset for flat lines,
        # horizontal for steep ones
        if abs(x1 - x0) >= abs(y1 - y0):
            px, py = xs, ys + d
        else:
            px, py = xs + d, ys
        keep = (px >= 0) & (px < W) & (py >= 0) & (py < H)
        canvas[py[keep], px[keep]] = colour


def _fill_rect(canvas, x0, y0, x1, y1, colour) -> None:
    """Fill the inclusive pixel rectangle, clipped to the canvas."""
    H, W = canvas.shape[:2]
    x0, x1 = max(int(x0), 0), min(int(x1), W - 1)
    y0, y1 = max(int(y0), 0), min(int(y1), H - 1)
    if x0 <= x1 and y0 <= y1:
        canvas[y0 : y1 + 1, x0 : x1 + 1] = colour


def _nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = False):
    """Round tick positions (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    span = hi - lo
    raw = span / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(step, 1.0)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(t)
        t = first + len(ticks) * step
    return ticks, step


def _format_tick(v: float, step: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.1e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{decimals}f}"


def _series(records, keys):
    """Extract (x_label, x, [(key, y), ...]) with NaN for missing/non-numeric."""
    if any(isinstance(r, dict) and "epoch" in r for r in records):
        x_key = "epoch"
    elif any(isinstance(r, dict) and "step" in r for r in records):
        x_key = "step"
    else:
        x_key = None

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan

    recs = [r for r in records if isinstance(r, dict)]
    if x_key is None:
        x = np.arange(1, len(recs) + 1, dtype=np.float64)
    else:
        x = np.array([num(r.get(x_key)) for r in recs], dtype=np.float64)
    series = []
    for key in keys:
        if any(key in r for r in recs):
            series.append((key, np.array([num(r.get(key)) for r in recs], dtype=np.float64)))
    return (x_key or "record"), x, series


def _plot_matplotlib(path, x_label, x, series, title) -> bool:
    """Plot with matplotlib's object API (no pyplot, no global backend switch).

    Returns False if matplotlib is unavailable.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for key, y in series:
        ok = np.isfinite(x) & np.isfinite(y)
        # NaN breaks the line, as in the fallback renderer
        ax.plot(np.where(ok, x, np.nan), np.where(ok, y, np.nan), marker="o" if len(x) <= 40 else None,
                markersize=3, label=key)
    ax.set_xlabel(x_label)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend()
    fig.tight_layout()
    _atomic_write(os.fspath(path), lambda f: fig.savefig(f, format="png"), prefix=".png-")
    return True


def _plot_fallback(x_label, x, series, title, width: int = 480, height: int = 320) -> np.ndarray:
    """Rasterise the plot into an RGB uint8 canvas without matplotlib."""
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    black, grey, lightgrey = (0, 0, 0), (90, 90, 90), (225, 225, 225)
    left, right, top, bottom = 56, width - 14, 28, height - 34

    # Data ranges from finite points only; degenerate ranges are widened so
    # that one point or a constant series still maps inside the axes.
    finite = [(x[np.isfinite(x) & np.isfinite(y)], y[np.isfinite(x) & np.isfinite(y)]) for _, y in series]
    xs = np.concatenate([fx for fx, _ in finite]) if finite else np.empty(0)
    ys = np.concatenate([fy for _, fy in finite]) if finite else np.empty(0)
    if xs.size:
        x_lo, x_hi = float(xs.min()), float(xs.max())
        y_lo, y_hi = float(ys.min()), float(ys.max())
    else:
        x_lo, x_hi, y_lo, y_hi = 0.0, 1.0, 0.0, 1.0
    if x_hi - x_lo <= 1e-12 * max(1.0, abs(x_lo)):
        x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
    if y_hi - y_lo <= 1e-12 * max(1.0, abs(y_lo)):
        d = max(abs(y_lo) * 0.1, 0.5)
        y_lo, y_hi = y_lo - d, y_hi + d
    else:
        d = 0.05 * (y_hi - y_lo)
        y_lo, y_hi = y_lo - d, y_hi + d
    integer_x = bool(xs.size) and bool(np.all(xs == np.round(xs)))

    def px(v):
        return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

    def py(v):
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    # grid lines and tick labels
    xticks, xstep = _nice_ticks(x_lo, x_hi, 6, integer=integer_x)
    for t in xticks:
        c = int(round(px(t)))
        _draw_line(canvas, c, top, c, bottom, lightgrey)
        _draw_line(canvas, c, bottom, c, bottom + 3, black)
        label = _format_tick(t, xstep)
        _draw_text(canvas, c - _text_width(label) // 2, bottom + 6, label, grey)
    yticks, ystep = _nice_ticks(y_lo, y_hi, 5)
    for t in yticks:
        r = int(round(py(t)))
        _draw_line(canvas, left, r, right, r, lightgrey)
        _draw_line(canvas, left - 3, r, left, r, black)
        label = _format_tick(t, ystep)
        _draw_text(canvas, left - 6 - _text_width(label), r - 3, label, grey)

    # series: polyline through consecutive finite points (NaN breaks the
    # line); small square markers when there are few points or a point is
    # isolated, so a single-record run is still visible.
    for k, (key, y) in enumerate(series):
        colour = _COLOURS[k % len(_COLOURS)]
        ok = np.isfinite(x) & np.isfinite(y)
        for i in range(len(x)):
            if not ok[i]:
                continue
            x0, y0 = px(x[i]), py(y[i])
            has_next = i + 1 < len(x) and ok[i + 1]
            if has_next:
                _draw_line(canvas, x0, y0, px(x[i + 1]), py(y[i + 1]), colour, width=2)
            isolated = not has_next and not (i > 0 and ok[i - 1])
            if len(x) <= 40 or isolated:
                _fill_rect(canvas, round(x0) - 1, round(y0) - 1, round(x0) + 1, round(y0) + 1, colour)

    # axes box drawn last so it sits on top of the data
    _draw_line(canvas, left, top, right, top, black)
    _draw_line(canvas, left, bottom, right, bottom, black)
    _draw_line(canvas, left, top, left, bottom, black)
    _draw_line(canvas, right, top, right, bottom, black)

    # legend in the top-right corner of the axes
    if series:
        lw = max(_text_width(key) for key, _ in series) + 28
        lh = 12 * len(series) + 6
        lx, ly = right - 6 - lw, top + 6
        _fill_rect(canvas, lx, ly, lx + lw, ly + lh, (255, 255, 255))
        for a, b, c, d in ((lx, ly, lx + lw, ly), (lx, ly + lh, lx + lw, ly + lh), (lx, ly, lx, ly + lh), (lx + lw, ly, lx + lw, ly + lh)):
            _draw_line(canvas, a, b, c, d, grey)
        for k, (key, _) in enumerate(series):
            row = ly + 5 + 12 * k
            _fill_rect(canvas, lx + 5, row, lx + 18, row + 6, _COLOURS[k % len(_COLOURS)])
            _draw_text(canvas, lx + 23, row, key, black)

    _draw_text(canvas, (width - _text_width(title, 2)) // 2, 6, title, black, scale=2)
    _draw_text(canvas, (left + right - _text_width(x_label)) // 2, height - 12, x_label, black)
    return canvas


def plot_metrics(records: list[dict], path, keys=("loss_D", "loss_G"), title="minigan") -> None:
    """Plot training curves to a PNG file.

    Parameters
    ----------
    records : list of dict
        One dict per epoch (or step), e.g. ``{"epoch": 1, "loss_D": 0.6,
        "loss_G": 0.9, ...}``.  The x axis is ``epoch`` if any record has it,
        else ``step``, else the record index (from 1).
    path : str or os.PathLike
        Output PNG, written atomically.
    keys : sequence of str, optional
        Series to plot; keys present in no record are skipped.  Missing,
        non-numeric, NaN and infinite values are skipped (they break the
        line).
    title : str, optional
        Plot title.

    Notes
    -----
    Uses matplotlib (``Figure`` + Agg canvas directly, so no global backend
    or pyplot state changes) when importable; otherwise a built-in
    rasteriser draws a 480x320 RGB image with grid, tick labels (5x7 bitmap
    font), coloured polylines and a legend.  Empty input gives empty axes.
    """
    x_label, x, series = _series(list(records), list(keys))
    if _plot_matplotlib(path, x_label, x, series, str(title)):
        return
    write_png(path, _plot_fallback(x_label, x, series, str(title)))
