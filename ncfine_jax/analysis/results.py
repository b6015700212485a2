"""``Results``: the typed content of a run's results.json.

``analyze`` builds one, ``write_analysis`` fills in the figures and timings and writes
``to_dict()``; ``from_dict`` reads a results.json back. The JSON keys are the field
names, in field order, with the per-epoch metrics of ``metrics.registry`` (``{epoch:
value}``, int epochs here: JSON object keys are strings and ``from_dict`` turns them back
into ints) in the place of the ``metrics`` field. A results.json written before a metric
was registered reads back with that metric empty (and a run's is analysed again).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ncfine_jax.errors import DataError
from ncfine_jax.metrics.registry import EPOCH_METRICS
# What the analysis of a training workdir adds from the run (the rest is None).
RUN_FIELDS = ("final_train_accuracy", "final_test_accuracy", "config", "experiment")

EpochValues = dict[int, Any]


@dataclasses.dataclass
class Results:
    """One analysis' numbers (accuracies are fractions in [0, 1]).

    ``fine_structure``: the significance block (``analysis.significance``).
    ``clp_accuracy`` / ``clp_accuracy_train_mapping``: CLP test accuracy with clusters
    mapped to classes on the test / training labels; ``lpo_accuracy``: linear probe on
    the original classes; ``ot_accuracy``: test accuracy of the original-label run;
    ``ari`` / ``nmi``: clustering agreement on the training set. CLP values are None when
    the labels are not a coarsening, LPO and CLP when no test split was given.
    ``metrics``: per-epoch metric (``metrics.registry.EPOCH_METRICS``, read also as
    attributes: ``results.nc1``) -> ``{epoch: value}``; NC3 / NC4 are None without a
    classifier. ``label_mapping``: ``LabelMapping.to_dict()``; ``analysis``: how it was analysed
    (source, epochs, seed, options, inputs, timings); ``clp_details``: CLP's mappings and
    per-label records; ``skipped``: ``{"step", "reason"}`` of every step not done;
    ``figures``: paths relative to the output directory.
    """
    fine_structure: dict | None
    clp_accuracy: float | None
    clp_accuracy_train_mapping: float | None
    lpo_accuracy: float | None
    ot_accuracy: float | None
    ari: float | None
    nmi: float | None
    metrics: dict[str, EpochValues]
    final_train_accuracy: float | None
    final_test_accuracy: float | None
    config: dict | None
    experiment: dict | None
    label_mapping: dict
    analysis: dict
    clp_details: dict | None
    skipped: list
    figures: list

    def __getattr__(self, name: str) -> EpochValues:
        metrics = self.__dict__.get("metrics") or {}
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"Results has no field or metric {name!r}")

    @property
    def epochs(self) -> list[int]:
        """The analysed epochs, in order."""
        return sorted(next(iter(self.metrics.values()), {}))

    def with_run(self, values: Mapping[str, Any]) -> Results:
        """A copy with ``RUN_FIELDS`` values set (``ValueError`` names any other key)."""
        unknown = sorted(set(values) - set(RUN_FIELDS))
        if unknown:
            raise ValueError(f"not run fields of Results: {', '.join(unknown)}")
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict:
        """The results.json object: every field in field order, the per-epoch metrics in
        the place of ``metrics`` (a fresh copy)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "metrics":
                out.update({k: _copy(v) for k, v in self.metrics.items()})
            else:
                out[f.name] = _copy(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], where: str = "results") -> Results:
        """The inverse of ``to_dict`` (also after a JSON round trip: epoch keys become
        ints again). A field missing, a key that is neither a field nor a registered
        metric, or a per-epoch metric that is not an object of integer epochs, is one
        ``DataError`` line naming ``where``. A registered metric the record lacks (it was
        written before the metric existed) reads as ``{}``."""
        if not isinstance(record, Mapping):
            raise DataError(f"{where}: not a JSON object")
        names = [f.name for f in dataclasses.fields(cls) if f.name != "metrics"]
        missing = [n for n in names if n not in record]
        unknown = sorted(set(record) - set(names) - set(EPOCH_METRICS))
        if missing or unknown:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(unknown)}"] if unknown else [])
            raise DataError(f"{where}: not a results record ({'; '.join(parts)})")
        values = {n: _copy(record[n]) for n in names}
        values["metrics"] = {k: _epoch_keys(_copy(record[k]), f"{where}: {k}")
                             if k in record else {} for k in EPOCH_METRICS}
        return cls(**values)


def _epoch_keys(values: Any, where: str) -> EpochValues:
    if not isinstance(values, Mapping):
        raise DataError(f"{where}: not an object of epochs")
    try:
        return {int(e): v for e, v in values.items()}
    except (TypeError, ValueError):
        raise DataError(f"{where}: an epoch key is not an integer") from None


def _copy(value: Any) -> Any:
    """A copy of nested dicts and lists (so a Results and its dict share nothing)."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value
