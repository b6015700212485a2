"""What the claims read: the finished results of plan items, or why there are none.

``Evidence`` looks only at the disk (each item's workdir under DIR) and at the statuses
the runner recorded (``paper_status.json``: skipped / failed / not selected), so a report
can be written at any time, from a finished, partial or killed plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ncfine_jax import workdir as wdir
from ncfine_jax.analysis.report import load_distance_matrices
from ncfine_jax.errors import NcfineError
from ncfine_jax.experiment import identity
from ncfine_jax.experiment.grid import point_name
from ncfine_jax.io import load_json
from ncfine_jax.paper.plan import PlanItem
from ncfine_jax.text import squashed


class NotRun(Exception):
    """A claim cannot be judged; the message says why (one line)."""


def _read(path: Path):
    """JSON content of ``path``; None when it is absent or unreadable (a claim whose
    evidence cannot be read is "not run", with the reason from ``finished_results``)."""
    try:
        return load_json(path, "evidence")
    except NcfineError:
        return None


def point_dir(item: PlanItem, root: Path, lr: float | None = None,
              weight_decay: float | None = None) -> Path:
    """Workdir of a single run, or of grid point (lr, wd)."""
    if item.kind == "grid":
        return root / item.name / point_name(lr, weight_decay)
    return root / item.name


def finished_results(workdir: Path, config) -> dict | None:
    """results.json of ``workdir`` when it holds the analysis of ``config`` trained to its
    last epoch, else None."""
    results = _read(wdir.RunDir(workdir).results)
    if not isinstance(results, dict):
        return None
    if identity(results.get("experiment") or {}) != config.identity():
        return None
    if (results.get("analysis") or {}).get("epochs_trained") != config.epochs:
        return None
    return results


class Evidence:
    """Finished results of the plan items under ``root``.

    Args:
      root: DIR.
      plan: the whole plan of the scale (not only the items selected this time).
      statuses: name -> {"state", "reason"} from the runner (``paper_status.json``).
      scale: the ``Scale`` (its name for messages, its main lr / wd).
    """

    def __init__(self, root: Path, plan: Sequence[PlanItem], statuses: dict, scale):
        self.root = Path(root)
        self.items = {i.name: i for i in plan}
        self.statuses = statuses
        self.scale = scale.name
        self.main_lr, self.main_wd = scale.lr, scale.weight_decay

    def item(self, name: str) -> PlanItem:
        if name not in self.items:
            raise NotRun(f"{name} is not in the {self.scale} plan")
        return self.items[name]

    def _why(self, name: str, what: str) -> str:
        status = self.statuses.get(name) or {}
        state, reason = status.get("state"), status.get("reason")
        if state in ("skipped", "failed"):
            return f"{name} {state}: {reason}"
        if state == "not selected":
            return f"{name} not run: not in --only"
        if state == "done":
            return f"{name}: {what}"
        return f"{name} not finished ({what})"

    def config(self, name: str, point: tuple[float, float] | None = None):
        item = self.item(name)
        if item.kind != "grid":
            return item.configs[0]
        config = item.point(*point)
        if config is None:
            raise NotRun(f"{name} has no point lr {point[0]:g}, wd {point[1]:g}")
        return config

    def results(self, name: str, point: tuple[float, float] | None = None) -> dict:
        """results.json of a finished run or grid point; NotRun says why not."""
        item = self.item(name)
        config = self.config(name, point)
        workdir = point_dir(item, self.root, config.lr, config.weight_decay)
        label = name if point is None else f"{name}/{workdir.name}"
        diverged = _read(wdir.RunDir(workdir).diverged)
        if isinstance(diverged, dict):
            raise NotRun(f"{label} diverged at epoch {diverged.get('epoch')}: "
                         f"{' '.join(str(diverged.get('message') or diverged.get('reason')).split())}")
        results = finished_results(workdir, config)
        if results is None:
            raise NotRun(self._why(name, f"{label} has no finished analysis"))
        return results

    def train_accuracy(self, name: str, point: tuple[float, float] | None = None
                       ) -> dict[int, float]:
        """{epoch: training accuracy on the training labels} of a finished run, from its
        log.jsonl (the running accuracy of each epoch, 0-1)."""
        self.results(name, point)
        item = self.item(name)
        config = self.config(name, point)
        path = point_dir(item, self.root, config.lr, config.weight_decay) / wdir.LOG_FILE
        try:
            records = wdir.read_log(path, writer=False)
        except Exception as e:  # noqa: BLE001 - an unreadable log is a reason, not a crash
            raise NotRun(f"{name}: {squashed(e)}") from None
        return {r["epoch"]: r["train_accuracy"] for r in records
                if isinstance(r.get("train_accuracy"), (int, float))}

    def distances(self, name: str, point: tuple[float, float] | None = None):
        """({epoch: D}, superclass_of_class) of a finished run."""
        self.results(name, point)
        item = self.item(name)
        config = self.config(name, point)
        try:
            return load_distance_matrices(point_dir(item, self.root, config.lr,
                                                   config.weight_decay))
        except Exception as e:  # noqa: BLE001 - an unreadable file is a reason, not a crash
            raise NotRun(f"{name}: {squashed(e)}") from None

    def records(self, name: str) -> list[dict]:
        """Records of a finished Gaussian-mixture sweep."""
        item = self.item(name)
        data = _read(wdir.RunDir(self.root / name).results)
        if not isinstance(data, dict) or data.get("study") != item.study.to_dict():
            raise NotRun(self._why(name, "no finished sweep"))
        return data["records"]

    def figure(self, name: str, relative: str, point: tuple[float, float] | None = None
               ) -> str | None:
        """Path of an item's figure relative to DIR when it exists, else None."""
        item = self.items.get(name)
        if item is None:
            return None
        if point is not None:
            config = item.point(*point)
            if config is None:
                return None
            path = point_dir(item, self.root, config.lr, config.weight_decay) / relative
        else:
            path = self.root / name / relative
        return str(path.relative_to(self.root)) if path.is_file() else None
