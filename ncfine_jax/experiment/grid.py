"""An lr x weight-decay grid of one experiment: ``run_grid`` and ``experiments/grid.py``.

The paper's evidence is a 3 x 3 grid (lr in {0.1, 0.01, 0.001} x wd in {5e-3, 5e-4, 5e-5},
plus a wd = 0 column in App. A). Each point (lr, wd) is a complete single-run workdir
``DIR/lr<lr>_wd<wd>/`` (so every analysis works unchanged), trained by the engine's
``train_grid`` (vmapped in chunks, or one after the other). The grid directory holds
``grid.json`` (what the grid is), ``summary.json`` (one record per point) and the grid
figures. The grid and every point are locked for the whole command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Sequence

from ncfine_jax import console, workdir as wdir
from ncfine_jax.analysis import grid_figures
from ncfine_jax.distributed import agree, initialize_from_args, is_writer
from ncfine_jax.errors import ConfigError, NcfineError
from ncfine_jax.experiment.config import ExperimentConfig, config_from_args, identity
from ncfine_jax.experiment.run import (analyze, check_layout, check_ot_workdir, check_training,
                                       data_text, fmt, prepare_data, write_header)
from ncfine_jax.io import atomic_write_json
from ncfine_jax.train import choose_mode, read_divergence, train_grid
from ncfine_jax.train.layout import MODES
from ncfine_jax.train.state import TrainingDivergedError


def point_name(lr: float, weight_decay: float) -> str:
    """Sub-workdir name of a grid point, ``lr<lr>_wd<wd>`` (``%g`` formatting).

    E.g. ``point_name(0.1, 5e-4) == "lr0.1_wd0.0005"``, ``point_name(0.001, 5e-5) ==
    "lr0.001_wd5e-05"``; the same names as the single-run default workdirs.
    """
    return f"lr{lr:g}_wd{weight_decay:g}"


def grid_record(configs: Sequence[ExperimentConfig]) -> dict:
    """``DIR/grid.json``: the shared experiment record (lr and weight_decay removed) and
    the points."""
    base = {k: v for k, v in configs[0].identity().items() if k not in ("lr", "weight_decay")}
    return {"experiment": base,
            "points": [{"lr": c.lr, "wd": c.weight_decay,
                        "workdir": point_name(c.lr, c.weight_decay)} for c in configs]}


def check_grid(configs: Sequence[ExperimentConfig], mode: str, chunk_size: int | None,
               heatmap_epochs: Sequence[int] | None) -> list[str]:
    """Validate the grid's own settings; returns the point names."""
    if mode not in MODES + ("auto",):
        raise ConfigError(f"mode={mode!r}: must be one of {', '.join(MODES)}, auto")
    if not configs:
        raise ConfigError("grid: needs at least one (lr, wd) point")
    if mode == "sequential" and chunk_size is not None:
        raise ConfigError("--chunk-size: only applies to the vectorized mode")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"--chunk-size {chunk_size}: must be >= 1")
    for c in configs:
        c.validate()
    names = [point_name(c.lr, c.weight_decay) for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError("--lr/--wd: duplicate grid points (" +
                          ", ".join(sorted({n for n in names if names.count(n) > 1})) + ")")
    saved = set(configs[0].train.save_features_at)
    unsaved = sorted(set(heatmap_epochs or ()) - saved)
    if unsaved:
        raise ConfigError(f"--heatmap-epochs {' '.join(map(str, unsaved))}: no features are "
                          f"saved then (--save-features-at: {' '.join(map(str, sorted(saved)))})")
    return names


def run_grid(configs: Sequence[ExperimentConfig], workdir: str | Path, *, mode: str = "auto",
             chunk_size: int | None = None, data_dir: str | None = None,
             ot_workdir: str | None = None, overwrite: bool = False, progress: bool = True,
             heatmap_epochs: Sequence[int] | None = None,
             mesh_shape: tuple[int, int] | None = None, analysis: bool = True) -> dict:
    """Train (or resume) an experiment grid, analyse every point, write summary and figures.

    Args:
      configs: one ``ExperimentConfig`` per grid point (the same but for lr and
        weight_decay).
      workdir: grid directory DIR; point (lr, wd) lives in ``DIR/lr<lr>_wd<wd>/``.
      mode: "vectorize", "sequential" or "auto" (``train.choose_mode``: the faster of the
        two, timed on these devices before training; summary.json records the choice).
      chunk_size: vectorized: at most this many models at once.
      data_dir: where dataset archives are looked for.
      ot_workdir: original-label run for the OT bars of every point's report.
      overwrite: replace a workdir holding another grid and restart every point.
      progress: tqdm bars.
      heatmap_epochs: epochs of the per-epoch grid heatmaps (default: every saved epoch).
      mesh_shape: (M, D) device layout of every chunk (default: ``default_mesh_shape``).
      analysis: analyse the points and draw the grid figures (False: train only; the
        summary then holds no metrics).

    Returns:
      The ``summary.json`` content (process 0; the other processes of a multi-process run
      train and return {}).

    Raises:
      ConfigError / DataError / WorkdirError: bad input, before anything in ``workdir``
        changes.
    """
    workdir = Path(workdir)
    # "auto" precision resolved first (after any jax.distributed.initialize): grid.json, the
    # points' records and their identities hold the precision that runs.
    configs = [dataclasses.replace(c, train=c.train.resolved()) for c in configs]
    names = check_grid(configs, mode, chunk_size, heatmap_epochs)
    if mode == "auto" and (chunk_size is not None or len(configs) == 1
                           or (mesh_shape is not None and mesh_shape[0] > 1)):
        mode = "vectorize" if len(configs) > 1 else "sequential"  # nothing to time
    record = grid_record(configs)
    subdirs = [workdir / n for n in names]
    with console.phase("loading the data") as info:
        prepared = prepare_data(configs[0], data_dir)
        info["detail"] = data_text(configs[0], prepared.dataset)
    prepared = check_training(configs[0], prepared,
                              _check_grid_layout(configs, mode, mesh_shape))
    check_ot_workdir(ot_workdir, prepared.dataset.num_classes)
    _inspect_grid(workdir, record, configs, subdirs, overwrite)
    tconfigs = [dataclasses.replace(prepared.train_config, lr=c.lr, weight_decay=c.weight_decay)
                for c in configs]
    writer = is_writer()
    with contextlib.ExitStack() as locks:
        problem = None
        if writer:
            try:
                _open_grid(workdir, record, configs, subdirs, prepared.mapping, overwrite,
                           locks)
            except NcfineError as e:
                problem = e
        agree(problem, f"--workdir {workdir}")  # every process stops when process 0 refused
        if mode == "auto":
            mode = choose_mode(tconfigs, prepared.train_data, report=progress)
        t0 = time.perf_counter()
        points = train_grid(tconfigs, prepared.train_data, subdirs,
                            vectorize=(mode == "vectorize"), chunk_size=chunk_size,
                            progress=progress, mesh_shape=mesh_shape)
        train_s = time.perf_counter() - t0
        if not writer:
            return {}
        return _analyse_grid(workdir, configs, points, list(prepared.dataset.class_names),
                             ot_workdir=ot_workdir, analysis=analysis, mode=mode,
                             chunk_size=chunk_size, heatmap_epochs=heatmap_epochs,
                             train_s=train_s)


def _inspect_points(configs: Sequence[ExperimentConfig], subdirs: Sequence[Path]) -> None:
    for c, sub in zip(configs, subdirs):
        wdir.inspect(sub, wdir.EXPERIMENT_FILE, c.identity(), identity, False,
                     flag="grid point")


def _inspect_grid(workdir: Path, record: dict, configs, subdirs, overwrite: bool) -> str:
    """``wdir.inspect`` of the grid folder and, unless it is replaced, of every point."""
    state = wdir.inspect(workdir, wdir.GRID_FILE, record, lambda d: d, overwrite,
                         holds="a different grid")
    if state != "replace":
        _inspect_points(configs, subdirs)
    return state


def _check_grid_layout(configs: Sequence[ExperimentConfig], mode: str,
                       mesh_shape: tuple[int, int] | None) -> int:
    """The devices of the data axis; ConfigError unless the layout fits the grid's mode and
    points."""
    import jax

    if mesh_shape is None:
        return jax.device_count()
    check_layout(configs[0], mesh_shape, mesh_shape[0])
    if mode != "vectorize" and mesh_shape[0] != 1:
        raise ConfigError(f"--mesh {mesh_shape[0]}x{mesh_shape[1]}: the sequential mode "
                          "trains one model at a time; use a models axis of 1 or "
                          "--vectorize")
    if len(configs) % mesh_shape[0]:
        raise ConfigError(f"--mesh {mesh_shape[0]}x{mesh_shape[1]}: {mesh_shape[0]} model "
                          f"rows do not divide the {len(configs)} grid points")
    return mesh_shape[1]


def _open_grid(workdir: Path, record: dict, configs, subdirs, mapping, overwrite: bool,
               locks: contextlib.ExitStack) -> None:
    """Lock the grid and every point folder (held by ``locks``), reset on overwrite, write
    grid.json and every point's header (process 0)."""
    locks.enter_context(wdir.lock(workdir))
    state = _inspect_grid(workdir, record, configs, subdirs, overwrite)  # no folder made yet
    # Every point folder locked before anything changes: a second grid or run that would
    # share one is refused and this grid is unaffected.
    for sub in subdirs:
        locks.enter_context(wdir.lock(sub, flag="grid point"))
    if state == "replace":
        wdir.reset_grid(workdir, [sub.name for sub in subdirs])
    else:
        _inspect_points(configs, subdirs)  # under their locks now
    atomic_write_json(wdir.GridDir(workdir).record, record)
    for c, sub in zip(configs, subdirs):
        write_header(sub, c, mapping)


def _analyse_grid(workdir: Path, configs, points, class_names: list[str], *, ot_workdir,
                  analysis: bool, mode: str, chunk_size, heatmap_epochs, train_s: float
                  ) -> dict:
    """Analyse every trained point, write summary.json and the grid figures; returns the
    summary."""
    t0 = time.perf_counter()
    for c, p in zip(configs, points):
        if analysis and not p.diverged:
            analyze(p.workdir, c, ot_workdir, class_names)
    analysis_s = time.perf_counter() - t0
    summary = write_summary(workdir, configs, mode=mode, chunk_size=chunk_size,
                            timings={"train_s": round(train_s, 2),
                                     "analysis_s": round(analysis_s, 2)})
    if not analysis:
        return summary
    figures = grid_figures(
        [{"lr": c.lr, "wd": c.weight_decay, "workdir": str(p.workdir), "diverged": p.diverged}
         for c, p in zip(configs, points)],
        workdir, class_names=class_names, title=configs[0].experiment,
        heatmap_epochs="all" if heatmap_epochs is None else list(heatmap_epochs))
    summary["figures"] = [str(Path(f).relative_to(workdir)) for f in figures]
    atomic_write_json(wdir.GridDir(workdir).summary, summary)
    return summary


def _metric_at(results: dict, key: str, epoch: int | None):
    values = results.get(key) or {}
    if epoch is None:
        return None
    return values.get(str(epoch), values.get(epoch))


def write_summary(workdir: str | Path, configs: Sequence[ExperimentConfig], **extra) -> dict:
    """Write ``DIR/summary.json`` from the points' results.json / diverged.json.

    One record per grid point: lr, wd, workdir, diverged (bool), diverged_epoch,
    diverged_reason, clp_accuracy, lpo_accuracy, final_train_accuracy,
    final_test_accuracy, and nc1, nc2 at ``epoch`` (the last saved features epoch);
    None where not available.
    """
    workdir = Path(workdir)
    points = []
    for c in configs:
        sub = workdir / point_name(c.lr, c.weight_decay)
        divergence = read_divergence(sub)
        results = {}
        if divergence is None and wdir.RunDir(sub).results.exists():
            results = wdir.read_json_file(wdir.RunDir(sub).results, "results",
                                          {"analysis": dict},
                                          remedy="; rerun the grid with --overwrite")
        epoch = (results.get("analysis") or {}).get("epoch")
        points.append({
            "lr": c.lr, "wd": c.weight_decay, "workdir": sub.name,
            "diverged": divergence is not None,
            "diverged_epoch": None if divergence is None else divergence.get("epoch"),
            "diverged_reason": None if divergence is None else divergence.get("reason"),
            "clp_accuracy": results.get("clp_accuracy"),
            "lpo_accuracy": results.get("lpo_accuracy"),
            "final_train_accuracy": results.get("final_train_accuracy"),
            "final_test_accuracy": results.get("final_test_accuracy"),
            "epoch": epoch,
            "nc1": _metric_at(results, "nc1", epoch),
            "nc2": _metric_at(results, "nc2", epoch),
        })
    summary = {"experiment": configs[0].experiment, "points": points, **extra}
    atomic_write_json(wdir.GridDir(workdir).summary, summary)
    return summary


def summary_table(summary: dict) -> str:
    """Markdown table of ``summary.json`` (one row per grid point)."""
    rows = ["| lr | wd | diverged | train acc | test acc | CLP | LPO | NC1 | NC2 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in summary["points"]:
        diverged = (f"yes (epoch {p['diverged_epoch']}, {p['diverged_reason']})"
                    if p["diverged"] else "no")
        rows.append(f"| {p['lr']:g} | {p['wd']:g} | {diverged} | "
                    f"{fmt(p['final_train_accuracy'])} | {fmt(p['final_test_accuracy'])} | "
                    f"{fmt(p['clp_accuracy'])} | {fmt(p['lpo_accuracy'])} | {fmt(p['nc1'])} | "
                    f"{fmt(p['nc2'])} |")
    return "\n".join(rows)


def grid_configs(spec, args) -> list[ExperimentConfig]:
    """One validated config per (lr, wd) of the parsed grid flags, lr-major."""
    for flag, values in (("--lr", args.lr), ("--wd", args.wd)):
        check_distinct(flag, values)
    configs = []
    for lr in args.lr:
        for weight_decay in args.wd:
            ns = type(args)(**{**vars(args), "lr": lr, "wd": weight_decay})
            configs.append(config_from_args(spec.defaults, ns))
    return configs


def check_distinct(flag: str, values: Sequence[float]) -> None:
    """ConfigError naming ``flag`` and the first two equal values (0 and -0.0, 0.1 and
    0.10 are equal): each would be one grid point trained twice."""
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            if a == b:
                given = " ".join(f"{v:g}" for v in values)
                raise ConfigError(f"{flag} {given}: {a:g} and {b:g} are the same value "
                                  "(duplicate grid points); give each grid value once")


def run_grid_from_args(spec, args) -> dict:
    """Run what parsed grid flags ask for (``cli.build_grid_parser``); returns the summary."""
    configs = grid_configs(spec, args)
    console.enable()
    initialize_from_args(args)
    summary = run_grid(configs, args.workdir, mode=args.mode, chunk_size=args.chunk_size,
                       data_dir=args.data_dir, ot_workdir=args.ot_workdir,
                       overwrite=args.overwrite, progress=not args.no_progress,
                       heatmap_epochs=args.heatmap_epochs, mesh_shape=args.mesh,
                       analysis=not args.no_analysis)
    if not is_writer():
        return summary
    print(summary_table(summary))
    print(f"{args.workdir}: {len(configs)} grid points -> {wdir.GridDir(args.workdir).summary}")
    if all(p["diverged"] for p in summary["points"]):
        raise TrainingDivergedError(f"--workdir {args.workdir}: every grid point diverged "
                                    "(see the diverged column and each point's diverged.json)")
    return summary


__all__ = ["check_distinct", "check_grid", "grid_configs", "grid_record", "point_name",
           "run_grid", "run_grid_from_args", "summary_table", "write_summary"]
