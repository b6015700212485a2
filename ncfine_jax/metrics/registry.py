"""Which per-epoch metrics an analysis computes, declared once.

Every metric of ``results.json``'s per-epoch block (``{epoch: value}``) is one
``EpochMetric`` in ``EPOCH_METRICS``: its key, its title, what it measures, and how it is
computed. From this list come both compute paths (``streaming._from_statistics`` and
``api.neural_collapse_metrics`` evaluate every "statistics" metric), ``Results`` and
results.json, the report's per-epoch table, the NC-curves figure and the summary of
``python -m ncfine_jax.analyze``; a finished run whose results.json lacks a registered
metric is analysed again.

Adding a metric is its kernel (a pure function of ``ClassStats``, and of the classifier's
kernel when it needs one) and one ``register(EpochMetric(...))``. The kernels are named as
"module:function" and imported when first computed, so reading the registry loads no jax.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

# How a metric is computed:
#   "statistics"   a function of the class statistics of the training labels (one pass)
#   "second_pass"  needs a second read of the features given the final statistics (NC1,
#                  NC4; computed by ``streaming.second_pass``)
#   "distances"    from the class-distance matrix D and its grouping (MSDR; computed by
#                  the analysis, over the original classes for coarse labels)
SOURCES = ("statistics", "second_pass", "distances")


@dataclass(frozen=True)
class EpochMetric:
    """One per-epoch metric.

    Attributes:
      key: its name in results.json (and in every table), e.g. "nc2".
      title: how tables and figures name it, e.g. "NC2".
      meaning: one line, for the report.
      source: one of ``SOURCES``.
      function: "module:function" of ``f(stats)`` (or ``f(stats, kernel)`` with
        ``needs_classifier``) returning a scalar, for "statistics" metrics.
      needs_classifier: computed only when the classifier (kernel [d, L], bias [L]) is
        known; None otherwise.
      over_labels: measured on the training labels (the collapse metrics); False for
        MSDR, which measures the original classes inside the labels.
      plotted: drawn in the NC-curves figure.
    """

    key: str
    title: str
    meaning: str
    source: str
    function: str | None = None
    needs_classifier: bool = False
    over_labels: bool = True
    plotted: bool = True

    def compute(self, stats: Any, kernel: Any = None) -> Any:
        """The metric of ``ClassStats`` (a "statistics" metric only)."""
        module, name = self.function.split(":")
        f: Callable = getattr(importlib.import_module(module), name)
        return f(stats, kernel) if self.needs_classifier else f(stats)


EPOCH_METRICS: dict[str, EpochMetric] = {}


def register(metric: EpochMetric) -> EpochMetric:
    """Add ``metric`` (ValueError when its key is taken or its source unknown)."""
    if metric.key in EPOCH_METRICS:
        raise ValueError(f"epoch metric {metric.key!r}: already registered")
    if metric.source not in SOURCES:
        raise ValueError(f"epoch metric {metric.key!r}: source must be one of {SOURCES}")
    if (metric.source == "statistics") != (metric.function is not None):
        raise ValueError(f"epoch metric {metric.key!r}: a statistics metric names its "
                         "function, and only it")
    EPOCH_METRICS[metric.key] = metric
    return metric


def unregister(key: str) -> None:
    """Remove a registered metric (for tests and experiments that add their own)."""
    EPOCH_METRICS.pop(key, None)


def statistics_metrics(with_classifier: bool) -> list[EpochMetric]:
    """The metrics computed from the class statistics alone (those needing the classifier
    only ``with_classifier``)."""
    return [m for m in EPOCH_METRICS.values() if m.source == "statistics"
            and (with_classifier or not m.needs_classifier)]


_KERNELS = "ncfine_jax.metrics.kernels"
for _metric in (
    EpochMetric("nc1", "NC1", "within-class variability relative to between-class: "
                "(1/C) Tr(Sigma_W Sigma_B^+)", "second_pass"),
    EpochMetric("nc2", "NC2", "distance of the centred class means from a simplex ETF",
                "statistics", f"{_KERNELS}:nc2_from_statistics"),
    EpochMetric("nc3", "NC3", "distance of the classifier from the centred class means",
                "statistics", f"{_KERNELS}:nc3_from_statistics", needs_classifier=True),
    EpochMetric("nc4", "NC4", "fraction of samples where the classifier and the nearest "
                "class mean disagree", "second_pass", needs_classifier=True),
    EpochMetric("cdnv", "CDNV", "mean class-distance-normalised variance over class pairs",
                "statistics", f"{_KERNELS}:cdnv_from_statistics"),
    EpochMetric("msdr", "MSDR", "mean D between the original classes inside a label over "
                "the mean D within a class (>= 1 by construction with two classes a label)",
                "distances", over_labels=False, plotted=False),
):
    register(_metric)
