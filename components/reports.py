"""What a person reads in the KFP UI: Markdown tables and a small SVG loss curve,
plus metrics logging. Plain Python: components pass their artifacts in.
"""

from __future__ import annotations

import html
import json
import numbers


def markdown_table(title: str, rows: dict, note: str = "") -> str:
    """A two-column Markdown table of statistics (nested dicts are flattened)."""
    lines = [f"## {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| | |", "|---|---|"]
    for key, value in _flatten(rows).items():
        lines.append(f"| {key} | {_fmt(value)} |")
    return "\n".join(lines) + "\n"


def log_metrics(metrics, stats: dict, prefix: str = "") -> None:
    """Logs every numeric statistic on a KFP ``Metrics`` artifact (duck-typed).

    The values are also written to the artifact's file: KFP keeps metrics in
    metadata only, and kfp.local treats an output whose file is missing as a cache
    miss, so a step with metrics would never be served from the cache.
    """
    for key, value in _flatten(stats).items():
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            metrics.log_metric(f"{prefix}{key}", float(value))
    path = getattr(metrics, "path", None)
    if path:
        with open(path, "w") as f:
            json.dump(dict(metrics.metadata), f, indent=2, sort_keys=True)


SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def stage_loss_series(stages: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """``{"stage N": [(step, loss), ...]}`` from either trainer's per-stage results (their
    ``history``), each stage's steps shifted past the previous stage's last, so stage 2 continues
    to the right of stage 1 instead of drawing back over it."""
    out, offset = {}, 0.0
    for i, s in enumerate(stages, 1):
        points = [(float(x) + offset, y) for x, y in s.get("history", []) if y is not None]
        out[f"stage {s.get('stage', i)}"] = points
        if points:
            offset = points[-1][0]
    return out


def loss_curve_html(title: str, series, width: int = 640, height: int = 320) -> str:
    """A self-contained HTML page with an SVG line chart of (step, loss).

    ``series``: a list of points (one line), or ``{label: points}`` (a line and legend entry each,
    e.g. ``stage_loss_series``)."""
    if not isinstance(series, dict):
        series = {"loss": series}
    lines = {label: [(float(x), float(y)) for x, y in pts if y is not None] for label, pts in series.items()}
    lines = {label: pts for label, pts in lines.items() if pts}
    if not lines:
        return f"<html><body><h3>{html.escape(title)}</h3><p>No loss values recorded.</p></body></html>"
    pts = [p for line in lines.values() for p in line]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 40

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    svg = []
    for i, (label, line) in enumerate(lines.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{poly}">'
                   f"<title>{html.escape(label)}</title></polyline>")
        if len(lines) > 1:
            svg.append(f'<text x="{width - pad - 90}" y="{pad + 14 * i}" font-size="12" fill="{color}">'
                       f"{html.escape(label)}</text>")
    last_label, last = list(lines.items())[-1]
    return (
        f"<html><body><h3>{html.escape(title)}</h3>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="100%" height="100%" fill="white"/>{"".join(svg)}'
        f'<text x="{pad}" y="{height - 10}" font-size="12">step {x0:g} .. {x1:g}</text>'
        f'<text x="4" y="{pad - 10}" font-size="12">loss {y1:.3f} (top) .. {y0:.3f} (bottom)</text>'
        f"</svg><p>{len(pts)} points; last loss {last[-1][1]:.4f} at step {last[-1][0]:g}"
        f"{f' ({html.escape(last_label)})' if len(lines) > 1 else ''}</p></body></html>"
    )


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v[:20])) + (" ..." if len(v) > 20 else "")
    return str(v).replace("|", "\\|")
