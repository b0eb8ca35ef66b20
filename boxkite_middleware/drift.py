"""Drift statistics straight from a ``/metrics`` scrape, for the CLI and the demo.

The same tests the Prometheus rules make, on one scrape (or the difference of two): K-S for
histograms, Pearson's χ² for categories (PSI, of distributions mixed with a small uniform share
so that an empty bucket does not blow up the logarithm, only for the opt-in PSI floor), and
the change in the missing rate. Thresholds know the sample size: K-S against
``c(a)·sqrt((n+m)/(n·m))``, χ² against ``χ²(k−1, 1−a)``, the missing rate by a two-proportion
z-test and the share out of range by a rank argument, Bonferroni-corrected over the F columns
of a model (features and outputs together) and each column's tests (``a`` is the test's share
of α/F, see `rules.ALPHA_SHARES`); the opt-in floors are minimum effect sizes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from . import families
from .binning import OTHER
from .rules import RuleOptions

DEFAULTS = RuleOptions()
"""The thresholds' defaults are the alert rules' own."""

_LIVE = {
    (role, kind): families.sample(family[role], suffix)
    for role in families.COLUMN_LABEL
    for kind, family, suffix in (
        ("numeric", families.VALUE_FAMILY, "_bucket"),
        ("categorical", families.CATEGORY_FAMILY, "_total"),
    )
}
_MISSING = {
    role: families.sample(families.MISSING_FAMILY[role], "_total") for role in families.COLUMN_LABEL
}
_SUM = {
    role: families.sample(families.VALUE_FAMILY[role], "_sum") for role in families.COLUMN_LABEL
}
_STDDEV = {role: families.STDDEV_FAMILY[role].name for role in families.COLUMN_LABEL}


@dataclass(frozen=True)
class Distribution:
    """Live and baseline counts of one column, on the baseline's buckets or categories."""

    model: str
    role: str
    column: str
    kind: str
    keys: tuple[str, ...]
    live: np.ndarray
    expected: np.ndarray
    live_missing: float
    expected_missing: float | None
    baseline: str = ""  # the baseline's identity
    # For the Wasserstein distance of numeric columns (None where not exported):
    live_sum: float | None = None
    expected_sum: float | None = None
    stddev: float | None = None


def distributions(text: str) -> list[Distribution]:
    """Every column of every (model, baseline) in a Prometheus text scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[tuple, dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            key = labels.pop("le", None) or labels.pop("category", None)
            identity = (
                sample.name,
                labels.get("model"),
                labels.get("baseline"),
                labels.get("feature") or labels.get("output"),
            )
            values[identity][key or ""] = sample.value
    found = []
    for (name, model, baseline, column), live in values.items():
        for (role, kind), live_name in _LIVE.items():
            if name != live_name:
                continue
            expected = values.get((_baseline_twin(live_name), model, baseline, column))
            if expected is None:
                continue
            found.append(_distribution(values, role, kind, model, baseline, column, live, expected))
    return sorted(found, key=lambda d: (d.model, d.baseline, d.role, d.column))


def fleet_text(prometheus: str, window: str) -> str:
    """The counts of a whole fleet over ``window``, from a Prometheus server's HTTP API, as
    one scrape's text for `distributions`: live series ``increase``d and summed over every
    replica and worker, baseline series taken once (``max``), as the recording rules do."""
    import json
    import urllib.parse
    import urllib.request

    keep = "model, baseline, feature, output, le, category"
    lines = []
    queries = [
        pair
        for name in (*_LIVE.values(), *_MISSING.values(), *_SUM.values())
        for pair in (
            (name, f"sum by ({keep}) (increase({name}[{window}]))"),
            (_baseline_twin(name), f"max by ({keep}) ({_baseline_twin(name)})"),
        )
    ]
    queries += [(name, f"max by ({keep}) ({name})") for name in _STDDEV.values()]
    for sample, query in queries:
        url = f"{prometheus.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=30) as response:
            answer = json.loads(response.read())
        for series in answer["data"]["result"]:
            labels = ",".join(
                f"{key}={json.dumps(value)}" for key, value in sorted(series["metric"].items())
            )
            lines.append(f"{sample}{{{labels}}} {series['value'][1]}")
    return "\n".join(lines) + "\n"


def _baseline_twin(sample_name: str) -> str:
    """``boxkite_feature_value_bucket`` -> ``boxkite_feature_value_baseline_bucket``, etc."""
    stem, suffix = sample_name.rsplit("_", 1)
    return f"{stem}_baseline_{suffix}"


def _distribution(values, role, kind, model, baseline, column, live, expected) -> Distribution:
    if kind == "numeric":
        keys = tuple(sorted(expected, key=float))
        live_counts = np.diff([live.get(k, 0.0) for k in keys], prepend=0.0)
        expected_counts = np.diff([expected[k] for k in keys], prepend=0.0)
    else:
        keys = (*[k for k in expected if k != OTHER], OTHER)
        live_counts = np.array([live.get(k, 0.0) for k in keys])
        expected_counts = np.array([expected[k] for k in keys])

    def one(name: str) -> float | None:
        return values.get((name, model, baseline, column), {}).get("")

    return Distribution(
        model,
        role,
        column,
        kind,
        keys,
        live_counts,
        expected_counts,
        one(_MISSING[role]) or 0.0,
        one(_baseline_twin(_MISSING[role])),
        baseline or "",
        one(_SUM[role]),
        one(_baseline_twin(_SUM[role])),
        one(_STDDEV[role]),
    )


def since(later: list[Distribution], earlier: list[Distribution]) -> list[Distribution]:
    """Live counts added between two scrapes (the baseline stays as it is)."""
    before = {(d.model, d.baseline, d.role, d.column): d for d in earlier}
    out = []
    for d in later:
        old = before.get((d.model, d.baseline, d.role, d.column))
        if old is None:
            out.append(d)
        else:
            added = None
            if d.live_sum is not None and old.live_sum is not None:
                added = d.live_sum - old.live_sum
            out.append(
                replace(
                    d,
                    live=d.live - old.live,
                    live_missing=d.live_missing - old.live_missing,
                    live_sum=added,
                )
            )
    return out


def ks_statistic(live: np.ndarray, expected: np.ndarray) -> float:
    """Largest gap between the two cumulative distributions (binned: a lower bound)."""
    return float(
        np.max(np.abs(np.cumsum(live) / live.sum() - np.cumsum(expected) / expected.sum()))
    )


def wasserstein(d: Distribution) -> float | None:
    """The rules' first Wasserstein distance in training standard deviations: W1 of the
    histograms over the training range (each value at its bucket's upper edge), or the change
    of the mean where larger; None for categories and where the scrape lacks what it needs."""
    n, m = d.live.sum(), d.expected.sum()
    if d.kind != "numeric" or not d.stddev or not n or not m:
        return None
    edges = np.array([float(key) for key in d.keys[:-1]])
    gaps = np.abs(np.cumsum(d.live) / n - np.cumsum(d.expected) / m)[: edges.size - 1]
    distance = float(np.sum(gaps * np.diff(edges)))
    if d.live_sum is not None and d.expected_sum is not None:
        distance = max(distance, abs(d.live_sum / n - d.expected_sum / m))
    return distance / d.stddev


def psi(live: np.ndarray, expected: np.ndarray, smoothing: float = DEFAULTS.smoothing) -> float:
    """Population stability index, i.e. symmetric KL, of the smoothed distributions."""
    p, q = _smoothed(live, smoothing), _smoothed(expected, smoothing)
    return float(np.sum((p - q) * np.log(p / q)))


def jensen_shannon(
    live: np.ndarray, expected: np.ndarray, smoothing: float = DEFAULTS.smoothing
) -> float:
    p, q = _smoothed(live, smoothing), _smoothed(expected, smoothing)
    m = (p + q) / 2
    return float(np.sum(p * np.log(p / m)) + np.sum(q * np.log(q / m))) / 2


def _smoothed(counts: np.ndarray, smoothing: float) -> np.ndarray:
    return (1 - smoothing) * counts / counts.sum() + smoothing / counts.size


def ks_threshold(n: float, m: float, columns: int, options: RuleOptions = DEFAULTS) -> float:
    """Two-sample K-S critical value at 0.8·α/F (asymptotic), never below the K-S floor."""
    c = math.sqrt(-math.log(options.alpha_for("distribution") / columns / 2) / 2)
    return max(options.ks_floor, c * math.sqrt((n + m) / (n * m)))


def chi2_statistic(live: np.ndarray, expected: np.ndarray) -> float:
    """Pearson's two-sample χ² over the categories seen on either side."""
    n, m = live.sum(), expected.sum()
    pooled = (live + expected) / (n + m)
    seen = pooled > 0
    gap = live[seen] / n - expected[seen] / m
    return float(n * m / (n + m) * np.sum(gap**2 / pooled[seen]))


def chi2_threshold(
    live: np.ndarray, expected: np.ndarray, columns: int, options: RuleOptions = DEFAULTS
) -> float:
    """χ²(k−1) at 1 − 0.8·α/F, k the categories seen on either side."""
    seen = int(np.count_nonzero(live + expected))
    return chi2_quantile(max(seen - 1, 1), 1 - options.alpha_for("distribution") / columns)


def out_of_range_share(d: Distribution) -> float:
    """The share of live values in the buckets below the first and above the last training
    value: those whose baseline count is 0 at either end."""
    cumulative = np.cumsum(d.expected)
    below = cumulative == 0
    full = np.flatnonzero((cumulative >= cumulative[-1]) & (np.array(d.keys) != "+Inf"))
    above = np.zeros(len(d.keys), dtype=bool)
    if full.size:
        above[full[0] + 1 :] = True
    return float(d.live[below | above].sum() / d.live.sum())


def out_of_range_threshold(
    n: float, m: float, columns: int, options: RuleOptions = DEFAULTS
) -> float:
    """The share of n live values outside the range of m training values that chance allows.

    The training range is itself a sample: k of n new values fall above the largest of m
    training values exactly when the k largest of all n + m are new ones, with probability
    ``C(n, k)/C(n+m, k) ≈ r^k``, ``r = n/(n+m)`` (and likewise below the smallest). The alert
    needs ``(k+1)·r^k ≤ a``: ``k = ln(a/(k0+1))/ln(r)`` with ``k0 = ln(a)/ln(r)``,
    ``a = 0.1·α/F``; as a share, k divided by n. (A Poisson count of mean 2n/(m+1), which ignores
    that the training range varies, raised false alarms to 7 % at n = 1,000 on the real
    Wine Quality data; see BENCHMARKS.md.)"""
    a = options.alpha_for("out_of_range") / columns
    ratio = math.log(n / (n + m))
    first = math.log(a) / ratio
    return math.log(a / (first + 1)) / ratio / n


def missing_threshold(
    missing: float,
    rows: float,
    expected_missing: float,
    expected_rows: float,
    columns: int,
    options: RuleOptions = DEFAULTS,
) -> float:
    """How far the missing rate may move by chance: the two-proportion z-test at 0.1·α/F
    (two-sided), ``z·sqrt(p̄(1−p̄)(1/N + 1/M))`` with p̄ the pooled rate and N, M the live
    and baseline rows (missing ones included); never below the missing floor."""
    pooled = (missing + expected_missing) / (rows + expected_rows)
    z = NormalDist().inv_cdf(1 - options.alpha_for("missing") / columns / 2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / rows + 1 / expected_rows))
    return max(options.missing_floor, z * spread)


def chi2_quantile(degrees: int, probability: float) -> float:
    """Wilson–Hilferty approximation, as the Prometheus rules compute it: within 2.5 % for
    tails ≥ 0.001 and 2+ degrees of freedom, 3.5 % for one (worse in smaller tails)."""
    z = NormalDist().inv_cdf(probability)
    h = 2 / (9 * max(degrees, 1))
    return max(degrees, 1) * (1 - h + z * math.sqrt(h)) ** 3


@dataclass(frozen=True)
class Verdict:
    distribution: Distribution
    statistic: str
    value: float
    threshold: float
    missing_change: float | None
    drifted: bool | None  # None: too few live values to say
    reasons: tuple[str, ...]  # "distribution", "out of range", "missing"
    out_of_range: float | None = None  # share of live values outside the training range
    wasserstein: float | None = None  # W1 in training standard deviations


def judge(found: list[Distribution], options: RuleOptions = DEFAULTS) -> list[Verdict]:
    """A verdict per column, by the tests the alert rules make (``options``), α split over
    every column of a model, features and outputs together.

    The distribution is judged on the values present (at least ``min_live``), the missing
    rate on every row, present or not: a column that stops arriving has no values to judge,
    and is the plainest drift there is."""
    columns_per_model: dict[tuple[str, str], int] = defaultdict(int)
    for d in found:
        columns_per_model[d.model, d.baseline] += 1
    verdicts = []
    for d in found:
        n, m = float(d.live.sum()), float(d.expected.sum())
        columns = columns_per_model[d.model, d.baseline]
        reasons = []
        missing_change, missing_judged = None, False
        rows = n + d.live_missing
        if d.expected_missing is not None and rows > 0:
            expected_rows = m + d.expected_missing
            missing_change = d.live_missing / rows - d.expected_missing / expected_rows
            if rows >= options.min_live and expected_rows > 0:
                missing_judged = True
                limit = missing_threshold(
                    d.live_missing, rows, d.expected_missing, expected_rows, columns, options
                )
                if abs(missing_change) > limit:
                    reasons.append("missing")
        value = threshold = math.nan
        outside = None
        if n >= options.min_live and m > 0:
            if d.kind == "numeric":
                value = ks_statistic(d.live, d.expected)
                threshold = ks_threshold(n, m, columns, options)
                outside = out_of_range_share(d)
                if outside > out_of_range_threshold(n, m, columns, options):
                    reasons.insert(0, "out of range")
            else:
                value = chi2_statistic(d.live, d.expected)
                threshold = chi2_threshold(d.live, d.expected, columns, options)
                if psi(d.live, d.expected, options.smoothing) < options.psi_floor:
                    threshold = math.inf
            if value > threshold:
                reasons.insert(0, "distribution")
        judged = missing_judged or not math.isnan(value)
        drifted = bool(reasons) if judged else None
        verdicts.append(
            Verdict(
                d,
                _name(d),
                value,
                threshold,
                missing_change,
                drifted,
                tuple(reasons),
                outside,
                wasserstein(d) if judged else None,
            )
        )
    return verdicts


def _name(d: Distribution) -> str:
    return "K-S" if d.kind == "numeric" else "χ²"


def as_record(verdict: Verdict) -> dict[str, object]:
    """A verdict as plain JSON values (no NaN: null where there is no statistic)."""
    d = verdict.distribution

    def number(value: float | None) -> float | None:
        return None if value is None or math.isnan(value) else round(value, 6)

    return {
        "model": d.model,
        "baseline": d.baseline,
        "role": d.role,
        "column": d.column,
        "kind": d.kind,
        "baseline_n": float(d.expected.sum()),
        "live_n": float(d.live.sum()),
        "missing_change": number(verdict.missing_change),
        "statistic": verdict.statistic,
        "value": number(verdict.value),
        "threshold": number(verdict.threshold),
        "out_of_range": number(verdict.out_of_range),
        "wasserstein": number(verdict.wasserstein),
        "drifted": verdict.drifted,
        "reasons": list(verdict.reasons),
    }


def table(verdicts: list[Verdict]) -> str:
    """A fixed-width table, one line per column, drift flagged."""
    header = (
        "model",
        "column",
        "kind",
        "baseline n",
        "live n",
        "missing Δ",
        "statistic",
        "threshold",
        "",
    )
    rows = [header]
    for v in verdicts:
        d = v.distribution
        column = d.column if d.role == "feature" else f"→ output {d.column}"
        flag = {True: "DRIFT", False: "ok", None: "too few"}[v.drifted]
        if v.drifted:
            flag += f" ({', '.join(v.reasons)})"
        rows.append(
            (
                d.model,
                column,
                d.kind,
                f"{d.expected.sum():,.0f}",
                f"{d.live.sum():,.0f}",
                "?" if v.missing_change is None else f"{v.missing_change:+.1%}",
                "" if math.isnan(v.value) else f"{v.statistic} {v.value:.3f}",
                "" if math.isnan(v.threshold) else f"{v.threshold:.3f}",
                flag,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    right = {3, 4, 5, 6, 7}
    lines = []
    for number, row in enumerate(rows):
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("─" * w for w in widths))
    return "\n".join(lines)
