"""What a model's workdir holds, and where its training resumes.

``check_engine_workdir`` holds ``config.json`` against the run asked for (its record
migrated through the settings' record versions, ``settings.migrate_record``, as
``experiment.json`` is); ``restore_newest`` finds the newest intact checkpoint every model
of a stack has; ``runlog.check_resume`` then holds each log to it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ncfine_jax import manifest
from ncfine_jax import workdir as wdir
from ncfine_jax.errors import ConfigError, WorkdirError
from ncfine_jax.settings import migrate_record
from ncfine_jax.train.checkpoint import CheckpointUnreadable, Checkpointer
from ncfine_jax.train.config import BOOKKEEPING_FIELDS, TrainConfig
from ncfine_jax.train.state import TrainState

_AFRESH = "rerun with --overwrite to start afresh, or use another workdir"


def recorded_config(saved: dict) -> dict[str, Any]:
    """The TrainConfig fields a config.json's content records, in today's form (settings
    added since its record version filled in), without the bookkeeping fields."""
    version = {"record_version": saved["record_version"]} if "record_version" in saved else {}
    record = migrate_record({**saved["config"], **version}, [TrainConfig], "run config")
    return {k: v for k, v in record.items()
            if k not in BOOKKEEPING_FIELDS and k != "record_version"}


def check_engine_workdir(workdir: Path, config: TrainConfig, fingerprint: dict,
                         overwrite: bool) -> bool:
    """Read-only check of a model's workdir against its config.json.

    Returns:
      True when config.json records this run (resume), False for a fresh start.

    Raises:
      ConfigError: config.json records another config or other data, or engine files
        lie there without a config.json (unless ``overwrite``, which replaces them). The
        line names the differing keys of config.json and the remedy by its flag.
      WorkdirError: the workdir is unusable (a file in the way, unreadable config.json).
    """
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir {workdir}: exists and is not a directory")
    if overwrite:
        return False
    config_path = wdir.RunDir(workdir).config
    if config_path.exists():
        if manifest.read(workdir) is None:
            raise WorkdirError(f"workdir {workdir}: holds {wdir.CONFIG_FILE} but no "
                               f"{wdir.MANIFEST_FILE} (written by an older version); adopt it "
                               f"with `{wdir.ADOPT_COMMAND} {workdir}` or use another workdir")
        saved = wdir.read_json_file(config_path, "run config", {"config": dict, "data": dict},
                                    remedy="; rerun with --overwrite to start afresh")
        try:
            old = recorded_config(saved)
        except ConfigError as e:
            raise WorkdirError(f"run config {config_path}: {e}; {_AFRESH}") from None
        new = config.result_fields()
        diff = wdir.differences(old, new)
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
            raise ConfigError(f"workdir {workdir}: holds a run with a different config "
                              f"({details}); {_AFRESH}")
        old_data = saved.get("data") or {}
        diff = wdir.differences(old_data, fingerprint)
        if diff:
            details = ", ".join(f"{k}: {old_data.get(k)!r} -> {fingerprint.get(k)!r}"
                                for k in diff)
            raise ConfigError(f"workdir {workdir}: holds a run on different data ({details}); "
                              f"{_AFRESH}")
        return True
    recorded = manifest.read(workdir) if workdir.is_dir() else None
    if recorded is None:  # no manifest: whatever is there may be the engine's
        leftovers = [n for n in wdir.ENGINE_FILES[1:] if (workdir / n).exists()
                     and not wdir.is_prepared_link(workdir / n)]
    else:  # a user's file in checkpoints/ is not a leftover of a run
        leftovers = [n for n in wdir.ENGINE_FILES[1:]
                     if any(k == n or k.startswith(n + "/") for k in recorded)]
    if leftovers:
        raise ConfigError(f"workdir {workdir}: has {', '.join(leftovers)} but no "
                          f"{wdir.CONFIG_FILE}; {_AFRESH}")
    return False


def restore_newest(ckpts: list[Checkpointer], templates: list[TrainState], epochs: int
                   ) -> tuple[int, list[TrainState]]:
    """(newest epoch <= ``epochs`` at which every model has an intact checkpoint, the
    restored states); (0, ``templates``) when there is none.

    Unreadable newer checkpoints are passed over with one warning line; when checkpoints
    exist but none is intact, one WorkdirError line says which to delete.
    """
    common = set.intersection(*(set(c.epochs()) for c in ckpts))
    failures = []
    for epoch in sorted((e for e in common if e <= epochs), reverse=True):
        try:
            states = [c.restore(epoch, t) for c, t in zip(ckpts, templates)]
        except CheckpointUnreadable as e:
            failures.append(str(e))
            continue
        if failures:
            warnings.warn(f"{'; '.join(failures)}; resuming from the checkpoint of epoch {epoch}")
        return epoch, states
    if failures:
        dirs = " ".join(sorted({str(c.directory) for c in ckpts}))
        raise WorkdirError(f"no intact checkpoint ({failures[0]}); delete {dirs} to train "
                           "from scratch, or rerun with --overwrite")
    return 0, templates
