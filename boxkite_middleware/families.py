"""Metric family names, help texts and label names: every module that names a family uses these."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    """Family name as prometheus_client's ``Metric`` wants it (counters without ``_total``)."""
    kind: str
    documentation: str


FEATURE_VALUE = Family("boxkite_feature_value", "histogram", "Live numeric feature values.")
FEATURE_CATEGORY = Family("boxkite_feature_category", "counter", "Live categorical values.")
FEATURE_MISSING = Family(
    "boxkite_feature_missing", "counter", "Live null, NaN or non-numeric feature values."
)
INFERENCE_VALUE = Family("boxkite_inference_value", "histogram", "Live numeric predictions.")
INFERENCE_CATEGORY = Family("boxkite_inference_category", "counter", "Live label predictions.")
INFERENCE_MISSING = Family(
    "boxkite_inference_missing", "counter", "Live null or non-numeric predictions."
)
REQUESTS = Family(
    "boxkite_requests", "counter", "Requests the middleware looked at, by outcome and reason."
)
EXTRA_COLUMNS = Family(
    "boxkite_extra_columns",
    "counter",
    "Request columns that are not baseline features (counted without their names).",
)
BASELINE_INFO = Family("boxkite_baseline_info", "gauge", "One series per loaded baseline.")
COLUMN_INFO = Family(
    "boxkite_baseline_column_info", "gauge", "Order and kind of a baseline file's columns."
)


def baseline_of(family: Family) -> Family:
    """The training-data twin of a live family (``boxkite_feature_value_baseline``, ...)."""
    what = family.documentation.removeprefix("Live ")
    return Family(family.name + "_baseline", family.kind, f"Training-data {what}")


def sample(family: Family, suffix: str) -> str:
    """A sample name of a family: ``sample(REQUESTS, "_total")`` is ``boxkite_requests_total``."""
    return family.name + suffix


# Which families hold a column's data, by the column's role and kind.
VALUE_FAMILY = {"feature": FEATURE_VALUE, "inference": INFERENCE_VALUE}
CATEGORY_FAMILY = {"feature": FEATURE_CATEGORY, "inference": INFERENCE_CATEGORY}
MISSING_FAMILY = {"feature": FEATURE_MISSING, "inference": INFERENCE_MISSING}
COLUMN_LABEL = {"feature": "feature", "inference": "output"}

# Baseline-only gauges of a numeric column, for the Wasserstein distance in PromQL.
STDDEV_FAMILY = {
    role: Family(
        f"boxkite_{role}_value_baseline_stddev",
        "gauge",
        "Standard deviation of the training values: the Wasserstein distance's unit.",
    )
    for role in VALUE_FAMILY
}
WIDTH_FAMILY = {
    role: Family(
        f"boxkite_{role}_value_baseline_width",
        "gauge",
        "Distance from a bucket's edge to the next edge, for the Wasserstein distance.",
    )
    for role in VALUE_FAMILY
}
