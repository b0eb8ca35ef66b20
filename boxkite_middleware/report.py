"""The drift report: one self-contained HTML page, baseline and live side by side per column.

When an alert fires, the first questions are "which column?" and "what does it look like now
against training?". The page answers both without Grafana: one panel per column, worst first,
each with the baseline's and the live shares on the baseline's own buckets or categories
(drawn as inline SVG: no script, no network), the missing shares, the statistic, its threshold
and the verdict of `drift.judge`.
"""

from __future__ import annotations

import datetime
import html
import itertools
import math

import numpy as np

from .binning import OTHER
from .drift import Verdict

BASELINE_COLOUR, LIVE_COLOUR, DRIFT_COLOUR = "#9aa5b1", "#2f6fd6", "#c62828"
WIDTH, HEIGHT, MARGIN = 720, 170, 28

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2933; max-width: 780px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0; }
.meta { color: #52606d; margin-bottom: 20px; }
.panel { border: 1px solid #d9e2ec; border-radius: 6px; padding: 12px 16px; margin: 0 0 16px; }
.panel.drift { border-color: #c62828; }
.verdict { font-weight: 600; } .drift .verdict { color: #c62828; }
.numbers { color: #52606d; margin: 2px 0 6px; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }
svg text { font: 10px system-ui, sans-serif; fill: #52606d; }
"""


def page(verdicts: list[Verdict], *, source: str, window: str) -> str:
    """The report page for ``verdicts`` (one per column), worst first."""
    models = sorted({(v.distribution.model, v.distribution.baseline) for v in verdicts})
    live_n = max((float(v.distribution.live.sum()) for v in verdicts), default=0.0)
    drifted = sum(bool(v.drifted) for v in verdicts)
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    identity = ", ".join(f"{model} (baseline {baseline or '?'})" for model, baseline in models)
    header = (
        f"<h1>Drift report: {_text(identity)}</h1>"
        f'<p class="meta">{drifted} of {len(verdicts)} columns drifted · {_text(window)} · '
        f"up to {live_n:,.0f} live values per column · from {_text(source)} · {created}</p>"
        f'<p class="legend"><span style="background:{BASELINE_COLOUR}"></span>baseline'
        f'<span style="background:{LIVE_COLOUR}"></span>live</p>'
    )
    several = len(models) > 1
    panels = "".join(_panel(v, several) for v in sorted(verdicts, key=_severity))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Drift report</title><style>{STYLE}</style></head>"
        f"<body>{header}{panels}</body></html>\n"
    )


def _severity(verdict: Verdict) -> tuple:
    """Drifted first, then by how far the statistic is past (or short of) its threshold;
    columns with too few values to judge last."""
    ratio = verdict.value / verdict.threshold if verdict.threshold else math.inf
    judged = verdict.drifted is not None
    return (not verdict.drifted, not judged, -(0.0 if math.isnan(ratio) else ratio))


def _panel(verdict: Verdict, with_model: bool) -> str:
    d = verdict.distribution
    name = d.column if d.role == "feature" else f"output {d.column}"
    if with_model:
        name = f"{d.model}: {name}"
    flag = {True: "DRIFT", False: "ok", None: "too few values to judge"}[verdict.drifted]
    if verdict.drifted:
        flag += f" ({', '.join(verdict.reasons)})"
    statistic = (
        "no statistic"
        if math.isnan(verdict.value)
        else f"{verdict.statistic} {verdict.value:.3f} (threshold {verdict.threshold:.3f})"
    )
    base_rows = float(d.expected.sum()) + (d.expected_missing or 0.0)
    live_rows = float(d.live.sum()) + d.live_missing
    missing = (
        f"missing: baseline {_share(d.expected_missing or 0.0, base_rows)}, "
        f"live {_share(d.live_missing, live_rows)}"
    )
    if verdict.out_of_range is not None:
        missing += f" · outside the training range: live {verdict.out_of_range:.1%}"
    if verdict.wasserstein is not None:
        missing += f" · W1 {verdict.wasserstein:.2f} SD"
    labels, baseline, live = _bars(verdict)
    css = "panel drift" if verdict.drifted else "panel"
    return (
        f'<section class="{css}"><h2>{_text(name)} '
        f'<span class="verdict">{_text(flag)}</span></h2>'
        f'<p class="numbers">{_text(d.model)} · {d.kind} · {statistic} · '
        f"baseline n {d.expected.sum():,.0f}, live n {d.live.sum():,.0f} · {missing}</p>"
        f"{_chart(labels, baseline, live, name)}</section>"
    )


def _bars(verdict: Verdict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bucket (or category) labels with baseline and live shares of all rows, plus a last
    bar for the missing share. Categories by baseline share, ``__other__`` last."""
    d = verdict.distribution
    if d.kind == "numeric":
        edges = list(d.keys)
        middle = [f"{lower}–{upper}" for lower, upper in itertools.pairwise(edges[:-1])]
        labels = [f"≤ {edges[0]}", *middle, f"> {edges[-2]}"] if len(edges) > 1 else ["all"]
        if len(edges) > 2 and d.expected[0] == 0:  # the buckets outside the training range
            labels[0] = "below range"
        if len(edges) > 2 and d.expected[-1] == 0:
            labels[-1] = "above range"
        order = list(range(len(edges)))
    else:
        order = sorted(
            range(len(d.keys)), key=lambda i: (d.keys[i] == OTHER, -float(d.expected[i]))
        )
        labels = [d.keys[i] for i in order]
    base_rows = float(d.expected.sum()) + (d.expected_missing or 0.0)
    live_rows = float(d.live.sum()) + d.live_missing
    baseline = np.append(d.expected[order], d.expected_missing or 0.0) / max(base_rows, 1.0)
    live = np.append(d.live[order], d.live_missing) / max(live_rows, 1.0)
    return [*labels, "missing"], baseline, live


MISSING_GAP = 3
"""Empty slots between the last bucket and the missing share, which is no bucket."""


def _chart(labels: list[str], baseline: np.ndarray, live: np.ndarray, title: str) -> str:
    """Paired bars, baseline then live, scaled to the tallest share; the missing share (the
    last) set apart."""
    top = max(float(baseline.max(initial=0)), float(live.max(initial=0)), 1e-9)
    slot = (WIDTH - 2 * MARGIN) / (len(labels) + MISSING_GAP)
    bar = max(slot * 0.38, 1.0)
    plot = HEIGHT - 2 * MARGIN
    shapes = []
    every = max(1, math.ceil(len(labels) / 8))  # at most ~8 labels under the axis
    always = {
        i
        for i, label in enumerate(labels)
        if label in ("missing", OTHER, "below range", "above range")
    }
    named = always | {
        i for i in range(0, len(labels), every) if not any(0 < j - i < every for j in always)
    }
    for i, label in enumerate(labels):
        x = MARGIN + (i + (MISSING_GAP if i == len(labels) - 1 else 0)) * slot
        for offset, share, colour, kind in (
            (0.0, baseline[i], BASELINE_COLOUR, "baseline"),
            (bar, live[i], LIVE_COLOUR, "live"),
        ):
            height = plot * float(share) / top
            shapes.append(
                f'<rect x="{x + offset:.1f}" y="{MARGIN + plot - height:.1f}" '
                f'width="{bar:.1f}" height="{height:.1f}" fill="{colour}">'
                f"<title>{_text(label)}: {kind} {float(share):.1%}</title></rect>"
            )
        if i in named:
            shapes.append(
                f'<text x="{x + bar:.1f}" y="{HEIGHT - 10}" text-anchor="middle">'
                f"{_text(label[:14])}</text>"
            )
    axis = (
        f'<line x1="{MARGIN}" y1="{MARGIN + plot}" x2="{WIDTH - MARGIN}" y2="{MARGIN + plot}" '
        'stroke="#bcccdc"/>'
        f'<text x="{MARGIN}" y="{MARGIN - 8}">{top:.0%} of rows</text>'
    )
    return (
        f'<svg role="img" aria-label="{_text(title)}: baseline and live shares" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%">{axis}{"".join(shapes)}</svg>'
    )


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)
