"""Settings: a config field declared once, with its flag, help, range and role.

A run's configuration is a few frozen dataclasses (``TrainConfig``, and ``DataConfig``,
``LabelConfig``, ``AnalysisConfig`` in ``ncfine_jax.experiment.config``). Each field is
declared with ``setting(...)``; the command-line flags, the flat JSON record
(``experiment.json``) and the rule of which fields identify a run are all read from these
declarations, so a new flag is one field.

**Record versions.** Both run records (``experiment.json`` and the engine's
``config.json``) carry ``"record_version"`` (``RECORD_VERSION``; absent: 1). A setting
added after version 1 declares the version that added it and the value every run had
before (``setting(0.0, since=3, before=0.0)``); ``migrate_record`` reads an older record
by filling those values in, and both records are compared through it, so a workdir
written before a setting existed resumes (and is not trained again) when its run had
that value. Adding a setting: declare it with ``since=RECORD_VERSION + 1`` and its
``before``, and raise ``RECORD_VERSION``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from typing import Any, Callable, Iterable

from ncfine_jax.errors import ConfigError

INT32_MAX = 2**31 - 1  # counts, sizes and epochs reach int32 arrays and step counters
SEED_MAX = 2**32 - 1  # seeds are 32-bit (jax.random.key, numpy's SeedSequence words)
MAX_EPOCHS = 100_000
MAX_WIDTH = 65_536  # channels / hidden units; wider nets do not fit any accelerator

_META = "ncfine_jax"  # the key of a field's ``Meta`` in its dataclass metadata

# The sections of an experiment command's --help, in order.
FLAG_GROUPS = ("data and labels", "model", "optimisation and schedule", "run and workdir",
               "analysis", "multi-process")
# The version of the run records this code writes; ``migrate_record`` reads older ones.
RECORD_VERSION = 3


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()  # ``Meta.before`` of a setting every record version holds


@dataclasses.dataclass(frozen=True)
class Meta:
    """What a config field is beyond its value.

    Attributes:
      flag: its command-line flag (e.g. "--wd"), or None when it is not a flag.
      help: meaning and unit, for --help.
      identifies: False for a field a finished run may be resumed or re-analysed with
        another value of (bookkeeping, analysis settings).
      key: its name in the flat record (default: the field name).
      type: argparse type (default: the type of the default value; bool fields are
        on/off flags).
      choices, metavar, nargs: argparse options.
      grid_axis: a grid script's flag takes one or more values (one grid point each).
      int_range: (lo, hi) allowed for an integer value (None and non-int values such as
        "auto" are checked by the config's own ``validate``).
      group: the --help section of its flag (one of ``FLAG_GROUPS``).
      default_help: how --help names the default when the value itself says little
        (e.g. "the backbone's" for a width of None).
      since: the record version that added it (1: every record holds it).
      before: its value in every run recorded before ``since`` (required when since > 1).
    """

    flag: str | None = None
    help: str = ""
    identifies: bool = True
    key: str | None = None
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None
    metavar: str | None = None
    nargs: str | None = None
    grid_axis: bool = False
    int_range: tuple[int, int] | None = None
    group: str = "run and workdir"
    default_help: str | None = None
    since: int = 1
    before: Any = NO_VALUE


def setting(default: Any = dataclasses.MISSING, *,
            default_factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with its ``Meta`` (keyword arguments of ``Meta``).

    Raises:
      TypeError: ``since`` is not a record version up to ``RECORD_VERSION``, or a setting
        added after version 1 does not say what older runs had (``before``).
    """
    m = Meta(**meta)
    if not isinstance(m.since, int) or not 1 <= m.since <= RECORD_VERSION:
        raise TypeError(f"setting since={m.since!r}: must be a record version in "
                        f"1..RECORD_VERSION ({RECORD_VERSION}); raise RECORD_VERSION first")
    if (m.since > 1) == (m.before is NO_VALUE):
        raise TypeError(f"setting since={m.since}: a setting added after version 1 needs "
                        "before= (the value older runs had), and only such a setting has it")
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={_META: m})


def meta(field: dataclasses.Field) -> Meta:
    """The ``Meta`` of a dataclass field (a plain field: flagless and identifying)."""
    return field.metadata.get(_META, Meta())


def record_key(field: dataclasses.Field) -> str:
    """The field's name in the flat record."""
    return meta(field).key or field.name


def to_record(config: Any) -> dict[str, Any]:
    """Every field of a settings dataclass under its record key, JSON-ready (tuples as
    lists)."""
    return {record_key(f): _jsonable(getattr(config, f.name))
            for f in dataclasses.fields(config)}


def from_record(cls: type, record: dict[str, Any]) -> Any:
    """The ``cls`` instance of the record's keys of its fields (others take defaults;
    ``cls.__post_init__`` turns lists back into tuples)."""
    return cls(**{f.name: record[record_key(f)] for f in dataclasses.fields(cls)
                  if record_key(f) in record})


def migrate_record(record: dict[str, Any], classes: Iterable[type], what: str
                   ) -> dict[str, Any]:
    """A flat record of the fields of ``classes`` in today's form (``RECORD_VERSION``):
    every setting added after the record's ``"record_version"`` (absent: 1) that it lacks
    takes its declared ``before`` value.

    Raises:
      ConfigError: the version is not one this code reads (a newer ncfine_jax wrote it).
    """
    version = record.get("record_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) \
            or not 1 <= version <= RECORD_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > 1
        raise ConfigError(f"{what} record version {version!r}: this ncfine_jax reads versions "
                          f"1..{RECORD_VERSION}" + (" (a newer version wrote it)" if newer else ""))
    older = {record_key(f): copy.deepcopy(meta(f).before)
             for cls in classes for f in dataclasses.fields(cls)
             if meta(f).since > version and record_key(f) not in record}
    return {**older, **record, "record_version": RECORD_VERSION}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def int_or_auto(text: str) -> int | str:
    """argparse type: "auto" or an integer >= 1."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'auto' or an integer >= 1")
    return value


def range_problem(value: Any, int_range: tuple[int, int] | None) -> str | None:
    """"must be an integer in lo..hi" when an int ``value`` (or a bool/float in place of
    one) lies outside ``int_range``; None when it fits or is not checked here."""
    if int_range is None or value is None or isinstance(value, str):
        return None
    lo, hi = int_range
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        return f"must be an integer in {lo}..{hi}"
    return None
