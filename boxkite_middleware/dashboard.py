"""A Grafana dashboard over the recorded drift rules (see `rules`), as Grafana JSON.

Variables: the Prometheus data source, ``model`` (from ``boxkite_baseline_info``), ``feature``
(from the baseline's columns) and ``window`` (one per generated rule window). Panels: K-S and
PSI per feature over time, prediction drift, missing-rate change, the selected feature's
baseline vs live distribution, live sample sizes and request outcomes.
"""

from __future__ import annotations

from typing import Any

from . import families
from .rules import RuleOptions

REQUESTS = families.sample(families.REQUESTS, "_total")
BASELINE_INFO = families.BASELINE_INFO.name

SELECTED = 'model="$model"'
ONE = 'model="$model", feature="$feature"'


def _target(expr: str, legend: str, instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend,
    }
    if instant:
        target.update({"instant": True, "range": False, "format": "time_series"})
    return target


def _panel(
    title: str, kind: str, targets: list, unit: str = "none", description: str = ""
) -> dict[str, Any]:
    for letter, target in zip("ABCDEFG", targets):
        target["refId"] = letter
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def _laid_out(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Time series two to a row, bar gauges full width below; ids in order."""
    x = y = 0
    for number, panel in enumerate(found, 1):
        width = 12 if panel["type"] == "timeseries" else 24
        if x + width > 24:
            x, y = 0, y + 8
        panel["id"] = number
        panel["gridPos"] = {"h": 8, "w": width, "x": x, "y": y}
        x += width
    return found


def panels() -> list[dict[str, Any]]:
    window = "$window"
    return _laid_out(
        [
            _panel(
                "Feature drift: K-S statistic (numeric features)",
                "timeseries",
                [
                    _target(f"boxkite:feature_ks:{window}{{{SELECTED}}}", "{{feature}}"),
                    _target(
                        f"boxkite:feature_ks_threshold:{window}{{{ONE}}}", "threshold $feature"
                    ),
                ],
                description="Largest gap between live and baseline cumulative shares.",
            ),
            _panel(
                "Feature drift: PSI (categorical features)",
                "timeseries",
                [
                    _target(f"boxkite:feature_psi:{window}{{{SELECTED}}}", "{{feature}}"),
                    _target(
                        f"boxkite:feature_psi_threshold:{window}{{{ONE}}}", "threshold $feature"
                    ),
                ],
            ),
            _panel(
                "Prediction drift",
                "timeseries",
                [
                    _target(
                        f"boxkite:inference_ks:{window}{{{SELECTED}}}", "K-S output {{output}}"
                    ),
                    _target(
                        f"boxkite:inference_psi:{window}{{{SELECTED}}}", "PSI output {{output}}"
                    ),
                ],
            ),
            _panel(
                "Missing rate, live minus baseline",
                "timeseries",
                [
                    _target(
                        f"boxkite:feature_missing_rate_change:{window}{{{SELECTED}}}", "{{feature}}"
                    ),
                ],
                unit="percentunit",
            ),
            _panel(
                "Live values per window",
                "timeseries",
                [
                    _target(f"boxkite:feature_live_count:{window}{{{SELECTED}}}", "{{feature}}"),
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
            _panel(
                "$feature: cumulative share by bucket edge, baseline vs live",
                "bargauge",
                [
                    _target(f"boxkite:feature_baseline_cdf{{{ONE}}}", "baseline ≤ {{le}}", True),
                    _target(f"boxkite:feature_live_cdf:{window}{{{ONE}}}", "live ≤ {{le}}", True),
                ],
                unit="percentunit",
            ),
            _panel(
                "$feature: share by category, baseline vs live",
                "bargauge",
                [
                    _target(
                        f"boxkite:feature_baseline_share{{{ONE}}}", "baseline {{category}}", True
                    ),
                    _target(
                        f"boxkite:feature_live_share:{window}{{{ONE}}}", "live {{category}}", True
                    ),
                ],
                unit="percentunit",
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
                _query_variable(
                    "feature",
                    'label_values(boxkite:feature_baseline_count{model="$model"}, feature)',
                ),
                {
                    "name": "window",
                    "type": "custom",
                    "label": "window",
                    "query": ",".join(windows),
                    "current": {"text": windows[0], "value": windows[0]},
                    "options": [
                        {"text": w, "value": w, "selected": w == windows[0]} for w in windows
                    ],
                },
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
    """Every PromQL expression of a dashboard: its panels' targets and its variables."""
    found = [target["expr"] for panel in document["panels"] for target in panel["targets"]]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["definition"])
    return found
