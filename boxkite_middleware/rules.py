"""Prometheus recording and alert rules for drift, and a Grafana dashboard, generated.

Live counts are ``sum``med over every replica and worker with ``increase()`` (which handles
counter resets on restarts); baseline counts are taken once with ``max by`` — every replica
serves the same baseline, so summing would multiply it. Everything is grouped by ``model``
and ``baseline`` (plus the column), so replicas running different baselines during a rolling
deploy are each compared with their own bins.

Statistics per column and window: the K-S statistic for histograms (largest gap between the
live and baseline cumulative shares over the bucket edges — binned K-S can only under-state
the continuous one, so it is conservative) and the first Wasserstein distance for histograms;
Pearson's two-sample χ² for categories, and as their effect sizes PSI and Jensen–Shannon, each
distribution first mixed with a small uniform share ``p' = (1-λ)p + λ/k`` (adding 1 to every
count instead would make unchanged traffic look drifted in small windows); and the missing
rate, live minus baseline.

Thresholds are significance tests that know the sample size, α split (Bonferroni) over F, the
model's columns, features and outputs together, and each column's α/F over its tests
(`ALPHA_SHARES`: a = 0.8·α/F for the distribution, 0.1·α/F each for out-of-range values and
the missing rate): K-S against ``c(a)·sqrt((n+m)/(n·m))`` with ``c(a) = sqrt(-ln(a/2)/2)``;
Pearson's χ² against ``χ²(k−1, 1−a)``; the missing rate, judged on every row present or not,
by the two-sample z-test of proportions. The χ² and normal quantiles come from Wilson–Hilferty
and Abramowitz–Stegun 26.2.23, all in PromQL (within 2.5 % for a ≥ 0.001 and k ≥ 3; see
docs/drift.md for the rest). The floors are minimum effect sizes (K-S, PSI, missing-rate
change) the user opts into.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import families

if TYPE_CHECKING:
    from .baseline import Baseline

ROLES = families.COLUMN_LABEL
_SAMPLES = {
    "value_bucket": (families.VALUE_FAMILY, "_bucket"),
    "value_sum": (families.VALUE_FAMILY, "_sum"),
    "category_total": (families.CATEGORY_FAMILY, "_total"),
    "missing_total": (families.MISSING_FAMILY, "_total"),
}
"""The series a rule reads, by what it holds: the family of each role, and the suffix."""
ALPHA_SHARES = {"distribution": 0.8, "out_of_range": 0.1, "missing": 0.1}
"""How each column's share of α is spent among its tests, so that a model's false alarms stay
within α whichever test fires: a unit error or a vanished column is so far beyond chance that
a tenth of the share costs those tests a value or two, while the distribution test keeps
nearly its full power."""
_NORMAL_QUANTILE = (2.515517, 0.802853, 0.010328, 1.432788, 0.189269, 0.001308)


@dataclass(frozen=True)
class RuleOptions:
    """What `rules` generates; every field has a ``boxkite-middleware rules`` flag."""

    windows: tuple[str, ...] = ("30m",)
    alpha: float = 0.05
    # Minimum effect sizes, opt-in: by default an alert needs significance only.
    ks_floor: float = 0.0
    psi_floor: float = 0.0
    missing_floor: float = 0.0
    smoothing: float = 0.01
    min_live: int = 100
    duration: str = "15m"  # the alerts' for:
    sample_size: str = "rows"  # or "requests": rows of one batch are not independent
    group_by: tuple[str, ...] = field(default_factory=tuple)  # e.g. ("namespace",)

    def alpha_for(self, test: str) -> float:
        """The part of ``alpha`` one kind of test spends (`ALPHA_SHARES`)."""
        return self.alpha * ALPHA_SHARES[test]

    def __post_init__(self) -> None:
        for window in self.windows:
            if not re.fullmatch(r"\d+[smhdwy]", window):
                raise ValueError(f"not a Prometheus duration: {window!r}")
        if not 0 < self.alpha < 1 or not 0 <= self.smoothing < 1:
            raise ValueError("alpha must be in (0, 1) and smoothing in [0, 1)")
        if self.sample_size not in ("rows", "requests"):
            raise ValueError("sample_size is 'rows' or 'requests'")


@dataclass(frozen=True)
class _Names:
    """Series and recorded-rule names of one role (``feature`` or ``inference``)."""

    role: str
    options: RuleOptions

    @property
    def keep(self) -> str:
        return ", ".join(("model", "baseline", *self.options.group_by))

    @property
    def by(self) -> str:
        return f"{self.keep}, {ROLES[self.role]}"

    def live(self, kind: str) -> str:
        family, suffix = _SAMPLES[kind]
        return families.sample(family[self.role], suffix)

    def baseline(self, kind: str) -> str:
        family, suffix = _SAMPLES[kind]
        return families.sample(families.baseline_of(family[self.role]), suffix)

    def rule(self, what: str, window: str | None = None) -> str:
        return f"boxkite:{self.role}_{what}" + (f":{window}" if window else "")


def baseline_rules(role: str, options: RuleOptions) -> list[dict[str, str]]:
    """Window-independent rules, once: every baseline series a statistic reads, taken over the
    replicas that export it (``max by``), so the windows' rules read one copy."""
    names = _Names(role, options)
    by, rule = names.by, names.rule
    m, k = rule("baseline_count"), rule("categories")
    category = names.baseline("category_total")
    rules = [
        (
            m,
            f'max by ({by}) ({names.baseline("value_bucket")}{{le="+Inf"}})'
            f" or sum by ({by}) (max by ({by}, category) ({category}))",
        ),
        (k, f"count by ({by}) (max by ({by}, category) ({category}))"),
        (
            rule("baseline_cdf"),
            f"max by ({by}, le) ({names.baseline('value_bucket')}) / on ({by}) group_left () {m}",
        ),
        (rule("baseline_category"), f"max by ({by}, category) ({category})"),
        (rule("baseline_share"), _smoothed(rule("baseline_category"), m, k, by, options)),
        (rule("baseline_missing"), f"max by ({by}) ({names.baseline('missing_total')})"),
        # for the Wasserstein distance: the mean, the spread, and each edge's distance to the
        # next (labelled ``edge`` in the baseline: only histograms may carry ``le``)
        (
            rule("baseline_mean"),
            f"max by ({by}) ({names.baseline('value_sum')}) / on ({by}) {m}",
        ),
        (rule("baseline_stddev"), f"max by ({by}) ({families.STDDEV_FAMILY[role].name})"),
        (
            rule("baseline_width"),
            f"max by ({by}, le) (label_replace("
            f'{families.WIDTH_FAMILY[role].name}, "le", "$1", "edge", "(.*)"))',
        ),
    ]
    return [{"record": record, "expr": expr} for record, expr in rules]


COLUMNS = "boxkite:columns"
"""F, a model's columns, features and outputs together: α is split over all of them."""


def columns_rule(options: RuleOptions) -> dict[str, str]:
    counts = '{__name__=~"boxkite:(feature|inference)_baseline_count"}'
    return {"record": COLUMNS, "expr": f"count by ({_Names('feature', options).keep}) ({counts})"}


def recording_rules(role: str, window: str, options: RuleOptions) -> list[dict[str, str]]:
    """The live side and the statistics of one role over one window."""
    names = _Names(role, options)
    by, keep, rule = names.by, names.keep, names.rule
    n, m, k = rule("live_count", window), rule("baseline_count"), rule("categories")
    sample = rule("sample_size", window)
    live_cdf, base_cdf = rule("live_cdf", window), rule("baseline_cdf")
    live_share, base_share = rule("live_share", window), rule("baseline_share")
    live_counts = f"sum by ({by}, category) (increase({names.live('category_total')}[{window}]))"
    base_counts = rule("baseline_category")
    pooled = rule("pooled_share", window)
    missing_live = f"sum by ({by}) (increase({names.live('missing_total')}[{window}]))"
    missing_base = rule("baseline_missing")
    rows, base_rows = rule("live_rows", window), f"({missing_base} + on ({by}) {m})"
    columns = COLUMNS
    rules = [
        # n: live values with a bucket or a category (missing values are counted apart)
        (
            n,
            f'sum by ({by}) (increase({names.live("value_bucket")}{{le="+Inf"}}[{window}]))'
            f" or sum by ({by}) (increase({names.live('category_total')}[{window}]))",
        ),
        (sample, _sample_size(n, keep, window, options)),
        # K-S over the bucket edges
        (
            live_cdf,
            f"sum by ({by}, le) (increase({names.live('value_bucket')}[{window}]))"
            f" / on ({by}) group_left () ({n} > 0)",
        ),
        (rule("ks", window), f"max by ({by}) (abs({live_cdf} - on ({by}, le) {base_cdf}))"),
        # PSI and Jensen–Shannon over the smoothed category shares
        (
            live_share,
            _smoothed(live_counts, n, k, by, options),
        ),
        (
            rule("psi", window),
            f"sum by ({by}) (({live_share} - {base_share}) * ln({live_share} / {base_share}))",
        ),
        # Pearson's two-sample χ² over the categories seen on either side (unsmoothed)
        (
            pooled,
            f"({live_counts} + on ({by}, category) {base_counts})"
            f" / on ({by}) group_left () ({n} + on ({by}) {m})",
        ),
        (
            rule("chi2", window),
            f"sum by ({by}) (({live_counts} / on ({by}) group_left () ({n} > 0)"
            f" - on ({by}, category) {base_counts} / on ({by}) group_left () {m}) ^ 2"
            f" / on ({by}, category) ({pooled} > 0))"
            f" * on ({by}) ({sample} * on ({by}) {m} / ({sample} + on ({by}) {m}))",
        ),
        (
            rule("js", window),
            f"sum by ({by}) ({live_share} * ln(2 * {live_share} /"
            f" ({live_share} + {base_share})) + {base_share} * ln(2 *"
            f" {base_share} / ({live_share} + {base_share}))) / 2",
        ),
        # the missing rate, live minus baseline, judged on every row, present or not
        (rows, f"{missing_live} + on ({by}) {n}"),
        (
            rule("missing_rate_change", window),
            f"({missing_live} / on ({by}) ({rows} > 0))"
            f" - on ({by}) ({missing_base} / on ({by}) ({base_rows} > 0))",
        ),
        (
            rule("missing_threshold", window),
            _missing_threshold(missing_live, rows, missing_base, base_rows, by, keep, options),
        ),
        # the share of live values outside the training range: in the buckets below the
        # first and above the last training value (empty in the baseline)
        (
            rule("out_of_range", window),
            f"(max by ({by}) ({live_cdf} and on ({by}, le) ({base_cdf} == 0))"
            f" or on ({by}) ({n} > 0) * 0)"
            f" + on ({by}) (1 - min by ({by}) ({live_cdf} and on ({by}, le)"
            f' ({base_cdf}{{le!="+Inf"}} >= 1)) or on ({by}) ({n} > 0) * 0)',
        ),
        (
            rule("out_of_range_threshold", window),
            _out_of_range_threshold(sample, m, keep, options),
        ),
        (rule("wasserstein", window), _wasserstein(names, window, live_cdf, base_cdf, n)),
        # thresholds that know the sample size
        (rule("ks_threshold", window), _ks_threshold(sample, m, columns, keep, options)),
        (
            rule("chi2_threshold", window),
            _chi2_threshold(f"count by ({by}) ({pooled} > 0)", columns, keep, options),
        ),
    ]
    return [{"record": record, "expr": expr} for record, expr in rules]


def _wasserstein(names: _Names, window: str, live_cdf: str, base_cdf: str, n: str) -> str:
    """The first Wasserstein distance in baseline standard deviations: over the training
    range, that of the two histograms with each value at its bucket's upper edge; where the
    change of the mean is larger (W1 is never below it), that change, so that values beyond
    the range, which have no bucket width, still count by how far out they are."""
    by, rule = names.by, names.rule
    gaps = f"abs({live_cdf} - on ({by}, le) {base_cdf})"
    inside = f"sum by ({by}) ({gaps} * on ({by}, le) {rule('baseline_width')})"
    live_mean = (
        f"sum by ({by}) (increase({names.live('value_sum')}[{window}])) / on ({by}) ({n} > 0)"
    )
    mean_change = f"abs({live_mean} - on ({by}) {rule('baseline_mean')})"
    larger = f"({inside} >= on ({by}) {mean_change}) or on ({by}) {mean_change} or {inside}"
    return f"({larger}) / on ({by}) {rule('baseline_stddev')}"


def _smoothed(counts: str, total: str, k: str, by: str, options: RuleOptions) -> str:
    """Shares mixed with a uniform share: ``(1-λ)·count/total + λ/k``."""
    keep = 1 - options.smoothing
    return (
        f"({keep!r} * {counts} / on ({by}) group_left () ({total} > 0))"
        f" + on ({by}) group_left () ({options.smoothing!r} / {k})"
    )


def _sample_size(n: str, keep: str, window: str, options: RuleOptions) -> str:
    if options.sample_size == "rows":
        return n
    recorded = families.sample(families.REQUESTS, "_total") + '{outcome="recorded"}'
    requests = f"sum by ({keep}) (increase({recorded}[{window}]))"
    return f"{n} * 0 + on ({keep}) group_left () {requests}"


def _ks_threshold(n: str, m: str, columns: str, keep: str, options: RuleOptions) -> str:
    critical = f"sqrt(-ln({options.alpha_for('distribution')!r} / (2 * {columns})) / 2)"
    return (
        f"clamp_min({critical} * on ({keep}) group_right () sqrt(({n} + {m}) / ({n} * {m}))"
        f", {options.ks_floor!r})"
    )


def _normal_quantile(tail: str) -> str:
    """z with P(Z > z) = ``tail``, by Abramowitz–Stegun 26.2.23 (error < 4.5e-4)."""
    c0, c1, c2, d1, d2, d3 = _NORMAL_QUANTILE
    t = f"sqrt(-2 * ln({tail}))"
    return (
        f"({t} - ({c0} + {c1} * {t} + {c2} * {t} ^ 2)"
        f" / (1 + {d1} * {t} + {d2} * {t} ^ 2 + {d3} * {t} ^ 3))"
    )


def _missing_threshold(
    missing: str,
    rows: str,
    base_missing: str,
    base_rows: str,
    by: str,
    keep: str,
    options: RuleOptions,
) -> str:
    """The two-proportion z-test at 0.1·α/F, two-sided: ``z·sqrt(p̄(1−p̄)(1/N + 1/M))``."""
    pooled = (
        f"(({missing} + on ({by}) {base_missing}) / on ({by}) ({rows} + on ({by}) {base_rows}))"
    )
    spread = f"sqrt({pooled} * (1 - {pooled}) * (1 / {rows} + on ({by}) 1 / {base_rows}))"
    z = _normal_quantile(f"{options.alpha_for('missing')!r} / (2 * {COLUMNS})")
    return f"clamp_min({z} * on ({keep}) group_right () {spread}, {options.missing_floor!r})"


def _out_of_range_threshold(n: str, m: str, keep: str, options: RuleOptions) -> str:
    """The share of n values outside the range of m training values that chance allows:
    ``ln(a/(k0+1))/ln(r)/n`` with ``r = n/(n+m)``, ``k0 = ln(a)/ln(r)``, ``a = 0.1·α/F`` (see
    `drift.out_of_range_threshold` for why)."""
    a = f"({options.alpha_for('out_of_range')!r} / {COLUMNS})"
    log_r = f"ln({n} / ({n} + {m}))"
    first = f"(ln({a}) / on ({keep}) group_right () {log_r})"
    return f"ln({a} / on ({keep}) group_right () ({first} + 1)) / {log_r} / {n}"


def _chi2_threshold(k: str, columns: str, keep: str, options: RuleOptions) -> str:
    """χ²(k−1, 1−0.8·α/F), k the categories seen: Wilson–Hilferty on an Abramowitz–Stegun
    normal quantile."""
    z = _normal_quantile(f"{options.alpha_for('distribution')!r} / {columns}")
    degrees = f"clamp_min({k} - 1, 1)"
    h = f"(2 / (9 * {degrees}))"
    return f"{degrees} * (1 - {h} + sqrt({h}) * on ({keep}) group_left () {z}) ^ 3"


def alert_rules(options: RuleOptions) -> list[dict[str, Any]]:
    """Drift alerts on the first window, quiet below ``min_live`` live values."""
    window = options.windows[0]
    alerts = []
    for role, column in ROLES.items():
        names = _Names(role, options)
        by = names.by

        def name(what: str, names: _Names = names) -> str:
            return names.rule(what, window)

        what = "Feature" if role == "feature" else "Prediction"
        enough = f"and on ({by}) {name('live_count')} >= {options.min_live}"
        enough_rows = f"and on ({by}) {name('live_rows')} >= {options.min_live}"
        psi_floor = (
            f" and on ({by}) {name('psi')} >= {options.psi_floor!r}" if options.psi_floor else ""
        )
        alerts.append(
            {
                "alert": f"Boxkite{what}Drift",
                "expr": f"({name('ks')} > on ({by}) {name('ks_threshold')}"
                f" or {name('chi2')} > on ({by}) {name('chi2_threshold')}{psi_floor}) {enough}",
                "for": options.duration,
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"{what} drift: {{{{ $labels.model }}}} {column} "
                    f"{{{{ $labels.{column} }}}}",
                    "description": f'K-S or χ² over {window} is {{{{ $value | printf "%.3f" }}}}'
                    ", above its sample-size-aware threshold.",
                },
            }
        )
        alerts.append(
            {
                "alert": f"Boxkite{what}OutOfRange",
                "expr": f"{name('out_of_range')} > on ({by}) {name('out_of_range_threshold')}"
                f" {enough}",
                "for": options.duration,
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"Values outside the training range: {{{{ $labels.model }}}} "
                    f"{column} {{{{ $labels.{column} }}}}",
                    "description": f"{{{{ $value | humanizePercentage }}}} of the values over "
                    f"{window} lie outside the range the model was trained on.",
                },
            }
        )
        alerts.append(
            {
                "alert": f"Boxkite{what}MissingRate",
                "expr": f"abs({name('missing_rate_change')})"
                f" > on ({by}) {name('missing_threshold')} {enough_rows}",
                "for": options.duration,
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"Missing values changed: {{{{ $labels.model }}}} {column} "
                    f"{{{{ $labels.{column} }}}}",
                    "description": f"The missing rate over {window} moved by "
                    "{{ $value | humanizePercentage }} from the baseline, more than chance "
                    "allows for this many rows (a column that stopped arriving moves it by "
                    "100 %).",
                },
            }
        )
    return alerts


def baseline_series(baseline: Baseline, model: str, labels: Mapping[str, str]) -> list[dict]:
    """The baseline's families as constant recording rules, one per series, with the labels
    the middleware would give them (``model``, ``baseline``, ``labels``): evaluated once per
    Prometheus instead of scraped from every replica, so that replicas can run with
    ``expose_baseline=False`` and a fleet stores one copy."""
    from .fileformat import metrics

    return [
        {"record": sample.name, "expr": f"vector({sample.value!r})", "labels": dict(sample.labels)}
        for metric in metrics(baseline, {"model": model, "baseline": baseline.identity, **labels})
        for sample in metric.samples
    ]


def rule_file(
    options: RuleOptions,
    baselines: Sequence[tuple[Baseline, str, Mapping[str, str]]] = (),
) -> dict[str, Any]:
    """Every rule group; with ``baselines`` (baseline, model, labels), a first group of their
    series as constants (two during a rolling deploy)."""
    groups = [
        {
            "name": f"boxkite-baseline-series-{model}-{baseline.identity}",
            "rules": baseline_series(baseline, model, labels),
        }
        for baseline, model, labels in baselines
    ]
    groups += [
        {
            "name": "boxkite-baseline",
            "rules": [
                *(rule for role in ROLES for rule in baseline_rules(role, options)),
                columns_rule(options),
            ],
        }
    ]
    groups += [
        {
            "name": f"boxkite-drift-{window}",
            "rules": [rule for role in ROLES for rule in recording_rules(role, window, options)],
        }
        for window in options.windows
    ]
    groups.append({"name": "boxkite-drift-alerts", "rules": alert_rules(options)})
    return {"groups": groups}


def to_yaml(document: Any, indent: int = 0) -> str:
    """Enough YAML for rule files (no dependency): mappings, lists, strings, numbers."""
    pad = " " * indent
    if isinstance(document, dict):
        lines = []
        for key, value in document.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{key}:\n{to_yaml(value, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {_scalar(value)}")
        return "\n".join(lines)
    if isinstance(document, list):
        items = []
        for item in document:
            body = to_yaml(item, indent + 2)
            items.append(f"{pad}- {body.lstrip()}")
        return "\n".join(items)
    return pad + _scalar(document)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return repr(value)
