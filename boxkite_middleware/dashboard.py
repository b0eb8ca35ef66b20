"""A Grafana dashboard over the recorded drift rules (see `rules`), as Grafana JSON.

Variables: the Prometheus data source, ``model`` (from ``boxkite_baseline_info``),
``baseline`` (all by default: a rolling deploy shows both), ``feature`` (from the baseline's
columns) and ``window`` (every window the rules were generated for, all shown: one row each).
Each row: every feature's and output's statistic divided by its threshold, so one line at 1
is every alert's threshold; the effect sizes themselves (K-S, PSI, W1); the share of values
outside the training range and the missing rate, each against its threshold; the selected
feature's cumulative share per bucket edge and share per category, baseline and live side by
side in edge order; live sample sizes. Firing drift alerts are annotations on every time
series.
"""

from __future__ import annotations

from typing import Any

from . import families
from .rules import COLUMNS, RuleOptions

REQUESTS = families.sample(families.REQUESTS, "_total")
BASELINE_INFO = families.BASELINE_INFO.name

SELECTED = 'model="$model", baseline=~"$baseline"'
ONE = f'{SELECTED}, feature="$feature"'
PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}


def _target(expr: str, legend: str, table: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": PROMETHEUS, "expr": expr, "legendFormat": legend}
    if table:
        target.update({"instant": True, "range": False, "format": "table"})
    return target


def _panel(
    title: str,
    kind: str,
    targets: list,
    unit: str = "none",
    description: str = "",
    threshold: float | None = None,
) -> dict[str, Any]:
    """A panel; ``threshold`` draws a red line there (the alerts' threshold, as 1)."""
    for letter, target in zip("ABCDEFG", targets):
        target["refId"] = letter
    defaults: dict[str, Any] = {"unit": unit}
    if threshold is not None:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": threshold}],
        }
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def _ratio(role: str, statistic: str, window: str, legend: str) -> dict[str, Any]:
    """A statistic divided by its threshold: above 1, the alert's condition holds."""
    selector = f"{{{SELECTED}}}"
    return _target(
        f"boxkite:{role}_{statistic}:{window}{selector}"
        f" / boxkite:{role}_{statistic}_threshold:{window}{selector}",
        legend,
    )


FEATURE, OUTPUT = "{{feature}} ({{baseline}})", "output {{output}} ({{baseline}})"
RATIOS = (
    ("Feature drift", (("feature", "ks", f"K-S {FEATURE}"), ("feature", "chi2", f"χ² {FEATURE}"))),
    (
        "Prediction drift",
        (("inference", "ks", f"K-S {OUTPUT}"), ("inference", "chi2", f"χ² {OUTPUT}")),
    ),
    (
        "Outside the training range (a unit error, a new sensor)",
        (("feature", "out_of_range", FEATURE), ("inference", "out_of_range", OUTPUT)),
    ),
)
"""The statistics drawn divided by their thresholds: (title, ((role, statistic, legend), …))."""


def _against_threshold(title: str, targets: list, description: str = "") -> dict[str, Any]:
    """Statistics divided by their thresholds, with the alerts' line at 1."""
    return _panel(
        f"{title}: ÷ threshold (alerts above 1)",
        "timeseries",
        targets,
        description=description,
        threshold=1,
    )


def _side_by_side(title: str, baseline: str, live: str, key: str) -> dict[str, Any]:
    """Baseline and live shares as paired bars, ordered by ``key`` (numerically for ``le``)."""
    panel = _panel(
        title,
        "barchart",
        [_target(baseline, "baseline", table=True), _target(live, "live", table=True)],
        unit="percentunit",
    )
    transformations: list[dict[str, Any]] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {name: True for name in ("Time", "model", "baseline", "feature")},
                "renameByName": {"Value #A": "baseline", "Value #B": "live"},
            },
        },
    ]
    if key == "le":
        transformations.append(
            {
                "id": "convertFieldType",
                "options": {"conversions": [{"targetField": "le", "destinationType": "number"}]},
            }
        )
    transformations.append({"id": "sortBy", "options": {"sort": [{"field": key}]}})
    panel["transformations"] = transformations
    panel["options"].update({"xField": key, "groupWidth": 0.8, "barWidth": 0.9})
    return panel


def _laid_out(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row, then time series two to a row and bar charts full width below; ids in order."""
    x = y = 0
    for number, panel in enumerate(found, 1):
        width = {"row": 24, "timeseries": 12}.get(panel["type"], 24)
        height = 1 if panel["type"] == "row" else 8
        if x + width > 24:
            x, y = 0, y + 8
        panel["id"] = number
        panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        x += width
        if panel["type"] == "row":
            x, y = 0, y + 1
    return found


def _effect_size(title: str, statistic: str, description: str = "") -> dict[str, Any]:
    """One statistic of every feature and output, as recorded, without a threshold."""
    window = "$window"
    return _panel(
        f"Effect size: {title}",
        "timeseries",
        [
            _target(
                f"boxkite:feature_{statistic}:{window}{{{SELECTED}}}", "{{feature}} ({{baseline}})"
            ),
            _target(
                f"boxkite:inference_{statistic}:{window}{{{SELECTED}}}",
                "output {{output}} ({{baseline}})",
            ),
        ],
        description=description,
    )


def panels() -> list[dict[str, Any]]:
    window = "$window"
    row = {
        "type": "row",
        "title": "Window $window",
        "repeat": "window",
        "collapsed": False,
        "panels": [],
    }
    return _laid_out(
        [
            row,
            *(
                _against_threshold(
                    title, [_ratio(role, what, window, legend) for role, what, legend in ratios]
                )
                for title, ratios in RATIOS
            ),
            _effect_size(
                "K-S per numeric column",
                "ks",
                "Largest gap between live and baseline cumulative shares.",
            ),
            _effect_size("PSI per categorical column", "psi"),
            _effect_size(
                "Wasserstein (W1) per numeric column, in baseline SDs",
                "wasserstein",
                "How far values moved, in training standard deviations: a unit error on a few "
                "values or a small shift of many. Evidently's default flags W1 above 0.1.",
            ),
            _against_threshold(
                "Missing rate change (a vanished column is far above)",
                [
                    _target(
                        f"abs(boxkite:feature_missing_rate_change:{window}{{{SELECTED}}})"
                        f" / boxkite:feature_missing_threshold:{window}{{{SELECTED}}}",
                        "{{feature}} ({{baseline}})",
                    ),
                    _target(
                        f"abs(boxkite:inference_missing_rate_change:{window}{{{SELECTED}}})"
                        f" / boxkite:inference_missing_threshold:{window}{{{SELECTED}}}",
                        "output {{output}} ({{baseline}})",
                    ),
                ],
            ),
            _panel(
                "Outside the training range: share of live values",
                "timeseries",
                [
                    _target(
                        f"boxkite:feature_out_of_range:{window}{{{SELECTED}}}",
                        "{{feature}} ({{baseline}})",
                    ),
                ],
                unit="percentunit",
            ),
            _panel(
                "Missing rate, live minus baseline",
                "timeseries",
                [
                    _target(
                        f"boxkite:feature_missing_rate_change:{window}{{{SELECTED}}}",
                        "{{feature}} ({{baseline}})",
                    ),
                ],
                unit="percentunit",
            ),
            _panel(
                "Live rows per window",
                "timeseries",
                [
                    _target(
                        f"boxkite:feature_live_rows:{window}{{{SELECTED}}}",
                        "{{feature}} ({{baseline}})",
                    ),
                ],
            ),
            _panel(
                "Request outcomes",
                "timeseries",
                [
                    _target(
                        f"sum by (outcome, reason) (rate({REQUESTS}{{{SELECTED}}}"
                        "[$__rate_interval]))",
                        "{{outcome}} {{reason}}",
                    ),
                ],
                unit="reqps",
            ),
            _side_by_side(
                "$feature: cumulative share at each bucket edge, baseline and live",
                f'boxkite:feature_baseline_cdf{{{ONE}, le!="+Inf"}}',
                f'boxkite:feature_live_cdf:{window}{{{ONE}, le!="+Inf"}}',
                "le",
            ),
            _side_by_side(
                "$feature: share by category, baseline and live",
                f"boxkite:feature_baseline_share{{{ONE}}}",
                f"boxkite:feature_live_share:{window}{{{ONE}}}",
                "category",
            ),
        ]
    )


def dashboard(options: RuleOptions) -> dict[str, Any]:
    """The dashboard JSON (import it in Grafana, or provision it)."""
    windows = list(options.windows)
    return {
        "title": "boxkite drift",
        "uid": "boxkite-drift",
        "tags": ["boxkite", "drift", "ml"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                _query_variable("model", f"label_values({BASELINE_INFO}, model)"),
                {
                    **_query_variable(
                        "baseline", f'label_values({COLUMNS}{{model="$model"}}, baseline)'
                    ),
                    "multi": True,
                    "includeAll": True,
                    "current": {"text": "All", "value": "$__all"},
                },
                _query_variable(
                    "feature",
                    'label_values(boxkite:feature_baseline_count{model="$model"}, feature)',
                ),
                {
                    "name": "window",
                    "type": "custom",
                    "label": "window",
                    "query": ",".join(windows),
                    "multi": True,
                    "current": {"text": windows, "value": windows},
                    "options": [{"text": w, "value": w, "selected": True} for w in windows],
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Drift alerts",
                    "datasource": PROMETHEUS,
                    "enable": True,
                    "iconColor": "red",
                    "expr": 'ALERTS{alertstate="firing", alertname=~"Boxkite.*", model="$model"}',
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{feature}}{{output}} ({{baseline}})",
                    "useValueForTime": False,
                    "step": "60s",
                }
            ]
        },
        "panels": panels(),
    }


def _query_variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "label": name,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "sort": 1,
    }


def expressions(document: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: its panels' targets, its variables and its
    annotations."""
    found = [target["expr"] for panel in document["panels"] for target in panel.get("targets", ())]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["definition"])
    found += [annotation["expr"] for annotation in document["annotations"]["list"]]
    return found
