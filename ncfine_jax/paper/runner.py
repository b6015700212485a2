"""Drive the plan: train what is not finished, skip what is, survive failures.

Each item is handed to the experiment layer (``run_experiment`` / ``run_grid``) or to
``gaussian_mixture.run_study``; they resume a partial workdir from its checkpoints and
refuse one holding another run. Before calling them the runner checks, from the disk
alone, whether an item is already finished (the same test ``run_experiment`` applies to
re-analysis), so a rerun of a finished plan loads no data and compiles nothing.

DIR holds ``paper.json`` (the scale and CIFAR-10 source: a DIR of another scale is
refused), ``paper_status.json`` (each item's last state: done / skipped / failed /
running / not selected, with the reason and seconds) and a lock for the whole command.
A dataset that cannot be loaded marks its items "skipped"; any exception of one item
marks it "failed" and the next item runs.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable, Sequence

from ncfine_jax import gaussian_mixture as gm, workdir as wdir
from ncfine_jax.data import load_dataset
from ncfine_jax.data.cache import DATA_ENV, cache_root
from ncfine_jax.data.loader import download_source, locate_cifar
from ncfine_jax.errors import DataError
from ncfine_jax.experiment import run_experiment
from ncfine_jax.experiment.grid import run_grid
from ncfine_jax.experiment.run import results_are_current
from ncfine_jax.io import atomic_write_json, read_json
from ncfine_jax.paper.evidence import point_dir
from ncfine_jax.paper.figures import study_figure
from ncfine_jax.paper.plan import PlanItem
from ncfine_jax.text import described, number, squashed

DATA_FLAGS = {"cifar10": "--cifar10", "cifar100": "--cifar100"}
DATASET_NAMES = ("cifar10", "cifar100")


def header(scale: str, cifar10: str) -> dict:
    """``paper.json``: what every run of DIR shares (another scale or CIFAR-10 source would
    make every workdir hold a different run)."""
    return {"scale": scale, "cifar10": cifar10}


def check_root(root: Path, record: dict) -> None:
    """Read-only: WorkdirError unless DIR is empty, absent or holds this plan."""
    wdir.inspect(root, wdir.PAPER_FILE, record, lambda d: {k: d.get(k) for k in record}, False,
                 holds="a paper plan with another scale or --cifar10")


@contextlib.contextmanager
def claimed_root(root: Path, record: dict):
    """Check DIR, hold its lock for the block and write ``paper.json``.

    Raises:
      WorkdirError: DIR holds something else or is in use; nothing is changed then.
    """
    check_root(root, record)
    with wdir.lock(root):
        check_root(root, record)  # under the lock: another command may have written it
        atomic_write_json(root / wdir.PAPER_FILE, record)
        yield


def read_statuses(root: Path) -> dict:
    try:
        data = read_json(root / wdir.PAPER_STATUS_FILE)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _seconds_spent(before: dict | None, finished: bool, seconds: float) -> float:
    """The seconds an item's status records: for an item this command found already
    finished, what the command that ran it took (plus this check), not the check alone."""
    before = before if isinstance(before, dict) else {}  # a damaged status file: no record
    spent = before.get("seconds")
    if finished and before.get("state") == "done" and isinstance(spent, (int, float)) \
            and not isinstance(spent, bool) and math.isfinite(spent):
        return round(spent + seconds, 1)
    return seconds


def data_source(dataset: str, name: str | None) -> str | None:
    """Where the plan's ``dataset`` comes from, in one line (the dry run's): the path given,
    the archive found on this machine, or the download a run would start first (None: not
    given; its items say they are skipped)."""
    flag = DATA_FLAGS[dataset]
    if name is None:
        return None
    if name not in DATASET_NAMES:
        return f"{flag}: {name}"
    found, _ = locate_cifar(name)
    if found is not None:
        return f"{flag} {name}: {found}"
    return (f"{flag} {name}: not on this machine (looked in ${DATA_ENV} and "
            f"{cache_root() / 'downloads'}); the run downloads {download_source(name).url} "
            f"first; without a network give {flag} PATH")


def dataset_not_given(name: str | None, flag: str) -> str | None:
    """Why a dataset cannot be used that is known without loading it (not given, a path
    that does not exist; one line), or None."""
    if name is None:
        return f"{flag} not given"
    if name not in DATASET_NAMES and not Path(name).exists():
        return f"{flag} {name}: not found"
    return None


def dataset_problem(name: str | None, flag: str) -> str | None:
    """Why a dataset cannot be used (one line), or None when it loads."""
    problem = dataset_not_given(name, flag)
    if problem is not None:
        return problem
    try:
        load_dataset(name)
    except DataError as e:
        return squashed(e)
    return None


def ot_request(item: PlanItem, root: Path, plan: dict) -> str | None:
    """The OT workdir to pass to ``item``: the baseline's workdir once finished, else None."""
    if item.ot is None or item.ot not in plan:
        return None
    base = plan[item.ot]
    return str(root / base.name) if is_finished(base, root, None) else None


def is_finished(item: PlanItem, root: Path, ot_workdir: str | None) -> bool:
    """Whether ``item``'s workdir already holds its whole result, analysed with
    ``ot_workdir`` (nothing left for the experiment layer to do)."""
    if item.kind == "gm":
        try:
            data = read_json(wdir.RunDir(root / item.name).results)
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("study") == item.study.to_dict()
    for c in item.configs:
        workdir = point_dir(item, root, c.lr, c.weight_decay)
        if item.kind == "grid" and wdir.RunDir(workdir).diverged.is_file():
            continue
        if not results_are_current(workdir, c, ot_workdir):
            return False
    if item.kind == "grid":
        return wdir.GridDir(root / item.name).summary.is_file()
    return True


def run_item(item: PlanItem, root: Path, ot_workdir: str | None, progress: bool) -> str:
    """Train / resume / analyse one item; returns a one-line summary."""
    workdir = root / item.name
    if item.kind == "run":
        r = run_experiment(item.configs[0], workdir, ot_workdir=ot_workdir, progress=progress)
        return (f"CLP {_fmt(r.get('clp_accuracy'))}, LPO {_fmt(r.get('lpo_accuracy'))}, "
                f"test accuracy {_fmt(r.get('final_test_accuracy'))}")
    if item.kind == "grid":
        summary = run_grid(item.configs, workdir, ot_workdir=ot_workdir, progress=progress)
        diverged = sum(pt["diverged"] for pt in summary["points"])
        return f"{len(summary['points'])} points, {diverged} diverged"
    return run_study(item, workdir)


def run_study(item: PlanItem, out: Path) -> str:
    """One Gaussian-mixture sweep -> ``out/results.json`` (the study and its records) and
    ``out/gaussian_mixture_<vary>.png`` in the layout of the paper's figure.

    Raises:
      WorkdirError: ``out`` holds another sweep or files of something else (unchanged).
    """
    st = item.study
    wdir.inspect(out, wdir.RESULTS_FILE, st.to_dict(), lambda d: d.get("study"), False,
                 holds="a Gaussian-mixture sweep with another config")
    with wdir.lock(out):  # its own workdir: what it writes goes into out/manifest.json
        return _run_study(item, out)


def _run_study(item: PlanItem, out: Path) -> str:
    st = item.study
    t0 = time.perf_counter()
    records = gm.run_study(st.vary, st.config, range(st.seeds), values=st.values,
                           sigma2s=st.sigma2s, weight_decay=st.weight_decay)
    wall = time.perf_counter() - t0
    c = st.config
    title = (f"Fig. {st.figure} layout: vary {st.vary}; {c.parameterization} parameterisation, "
             f"inputs {c.input_scaling}, lr {c.learning_rate:g}\n"
             f"n={c.num_clusters * c.samples_per_cluster}, d_in={c.d_input}, d_h={c.d_hidden}, "
             f"{c.steps} steps, {st.seeds} seeds")
    gm.plot_records(records, out / study_figure(st.vary), title)
    diverged = sum(r["diverged"] for r in records if r["subclasses"] == "all")
    atomic_write_json(out / wdir.RESULTS_FILE, {"study": st.to_dict(), "records": records,
                                             "wall_time_s": round(wall, 2)})
    return f"{len(records)} records, {diverged} diverged runs"


def _fmt(x) -> str:
    return number(x, ".3f")


def say(line: str) -> None:
    """Print a progress line at once (stdout is block-buffered when it is a file)."""
    print(line, flush=True)


def run_plan(plan: Sequence[PlanItem], selected: Sequence[PlanItem], root: Path, scale: str,
             data: dict, *, progress: bool = True, estimate: Callable | None = None,
             echo: Callable[[str], None] = say,
             on_done: Callable[[dict], None] | None = None) -> dict:
    """Run the ``selected`` items of ``plan`` in order under ``root``; returns the statuses.

    Args:
      plan: every item of the scale (unselected ones keep their last status).
      selected: the items to run now, in plan order.
      root: DIR (created; locked for the whole call).
      scale: the scale's name (``paper.json``).
      data: {"cifar10": name or path, "cifar100": name, path or None}.
      progress: tqdm bars of the engine.
      estimate: optional ``item -> seconds`` for the remaining-time line.
      echo: where progress lines go.
      on_done: called with the statuses at the end, still under the lock (the report).

    Raises:
      WorkdirError: DIR holds something else or is in use; nothing is changed then.
    """
    root = Path(root)
    by_name = {i.name: i for i in plan}
    with claimed_root(root, header(scale, data["cifar10"])):
        statuses = read_statuses(root)
        before = dict(statuses)  # an item already finished keeps the seconds it took
        chosen = {i.name for i in selected}
        for item in plan:
            if item.name not in chosen and item.name not in statuses:
                statuses[item.name] = {"state": "not selected", "reason": "not in --only"}
            elif item.name in chosen:
                statuses[item.name] = {"state": "pending", "reason": None}
        atomic_write_json(root / wdir.PAPER_STATUS_FILE, statuses)
        problems: dict[str, str | None] = {}
        t_start = time.perf_counter()
        remaining = sum(estimate(i) for i in selected) if estimate else None
        if remaining is not None and not math.isfinite(remaining):
            remaining = None
        for n, item in enumerate(selected, 1):
            t0 = time.perf_counter()
            tag = f"[{n}/{len(selected)}] {item.name}"
            state, reason, summary = "done", None, ""
            ot = ot_request(item, root, by_name)
            finished = is_finished(item, root, ot)
            if not finished and item.dataset is not None and item.dataset not in problems:
                problems[item.dataset] = dataset_problem(data.get(item.dataset),
                                                         DATA_FLAGS[item.dataset])
            problem = None if finished else problems.get(item.dataset)
            if finished:
                summary = "already finished"
            elif problem is not None:
                state, reason = "skipped", problem
            else:
                statuses[item.name] = {"state": "running", "reason": None}
                atomic_write_json(root / wdir.PAPER_STATUS_FILE, statuses)
                echo(f"{tag}: running ({item.kind}, {root / item.name})"
                     + ("" if item.ot is None or ot else f"; without OT bars: {item.ot} not finished"))
                try:
                    summary = run_item(item, root, ot, progress)
                except Exception as e:  # noqa: BLE001 - one failed item must not stop the others
                    state, reason = "failed", described(e)
            seconds = round(time.perf_counter() - t0, 1)
            statuses[item.name] = {"state": state, "reason": reason,
                                   "seconds": _seconds_spent(before.get(item.name), finished,
                                                             seconds)}
            atomic_write_json(root / wdir.PAPER_STATUS_FILE, statuses)
            line = f"{tag}: {state}" + (f": {reason}" if reason else f" ({summary})" if summary else "")
            line += f" in {seconds:.0f} s"
            if remaining is not None:
                remaining -= estimate(item)
                line += (f"; elapsed {(time.perf_counter() - t_start) / 60:.0f} min, "
                         f"est. {max(remaining, 0) / 60:.0f} min left")
            echo(line)
        if on_done is not None:
            on_done(statuses)
        return statuses
