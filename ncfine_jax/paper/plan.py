"""The runs that make up the paper at one scale, where they live and what they cost.

A plan is a list of :class:`PlanItem`: a single experiment run, an lr x weight-decay grid
of one experiment, or one Gaussian-mixture sweep. Each item owns the folder
``DIR/<item name>`` and is trained by the existing experiment layer
(``run_experiment`` / ``run_grid``) or ``gaussian_mixture.run_study``; nothing here
trains. Every CNN config is ``EXPERIMENTS[name].defaults`` with fields replaced, so a
plan item is exactly what the experiment scripts would run with the same flags.

The paper's main run (ResNet-18, Coarse CIFAR-10, lr 0.01, weight decay 5e-4) is one
point of the lr x wd grid, and App. A's weight decay 0 is one more column of that grid,
so neither is trained twice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ncfine_jax.errors import ConfigError
from ncfine_jax.experiment import AnalysisConfig, DataConfig, EXPERIMENTS
from ncfine_jax.gaussian_mixture import GMConfig
from ncfine_jax.paper.scales import SCALES, Scale
from ncfine_jax.train.config import resolve_precision

# Training-set sizes of the full datasets (for costs when a scale takes no subset).
FULL_TRAIN_SIZE = {"cifar10": 50_000, "cifar100": 50_000}

# Names of the items the claims read (see ``paper/claims/``).
OT = "original_cifar10"
GRID = "coarse_cifar10_grid"
LONG = "coarse_cifar10_long"
FINE = "fine_cifar10"
RANDOM = "random_coarse_cifar10"
DENSENET = "coarse_cifar10_densenet121"
VGG = "coarse_cifar10_vgg"
CIFAR100_COARSE = "coarse_cifar100"
CIFAR100_SUPER = "cifar100_superclasses"
GM_D_INPUT = "gm_fig18_d_input"
GM_D_HIDDEN = "gm_fig19_d_hidden"
GM_WEIGHT_DECAY = "gm_fig20_weight_decay"
GM_TAU2 = "gm_fig21_tau2"
# The Gaussian-mixture sweeps run twice: under the default parameterisation (mup, RMS-
# scaled inputs) and under PyTorch's defaults (standard init, raw inputs, lr 0.01), the
# likely reading of the paper (docs/gaussian_mixture.md); the claims need both.
PYTORCH_SUFFIX = "_pytorch"
PYTORCH_DEFAULTS = {"parameterization": "standard", "input_scaling": "none", "lr": 0.01}


def pytorch_variant(name: str) -> str:
    """The item name of a Gaussian-mixture sweep under PyTorch's defaults."""
    return name + PYTORCH_SUFFIX


@dataclass(frozen=True)
class GMStudy:
    """One Gaussian-mixture sweep (one figure of App. B), the arguments of ``run_study``.

    Attributes:
      vary: the varied parameter (one of ``gaussian_mixture.VARY_CHOICES``).
      config: the ``GMConfig`` (sizes, steps, parameterisation, input scaling).
      seeds: number of seeds (0 .. seeds - 1).
      values: values of the varied parameter (for ``tau2``: the x-axis grid).
      sigma2s: the x-axis sigma^2 grid (for ``tau2``: the one fixed sigma^2).
      weight_decay: fixed weight decay unless it is varied.
      figure: the paper's figure number.
    """

    vary: str
    config: object
    seeds: int
    values: tuple[float, ...]
    sigma2s: tuple[float, ...]
    weight_decay: float = 0.0
    figure: int = 0

    @property
    def runs(self) -> int:
        """Trained MLPs: grid points x seeds."""
        grid = len(self.values) * (1 if self.vary == "tau2" else len(self.sigma2s))
        return grid * self.seeds

    @property
    def sample_steps(self) -> int:
        """Full-batch GD cost: runs x steps x samples."""
        c = self.config
        return self.runs * c.steps * c.num_clusters * c.samples_per_cluster

    def to_dict(self) -> dict:
        """What identifies the sweep's results.json."""
        return {"vary": self.vary, "values": list(self.values), "sigma2s": list(self.sigma2s),
                "seeds": self.seeds, "weight_decay": self.weight_decay, "figure": self.figure,
                "config": dataclasses.asdict(self.config)}


@dataclass(frozen=True)
class PlanItem:
    """One unit of the paper plan, in the folder ``DIR/<name>``.

    Attributes:
      name: folder name under DIR and the name ``--only`` selects.
      kind: "run" (``run_experiment``), "grid" (``run_grid``) or "gm" (``run_study``).
      purpose: one line: which part of the paper it reproduces.
      configs: the ``ExperimentConfig`` of a run (one) or of every grid point.
      dataset: "cifar10" or "cifar100": the data flag that supplies it (None for "gm").
      ot: name of the item whose workdir is the OT baseline of this item, or None.
      study: the sweep of a "gm" item.
    """

    name: str
    kind: str
    purpose: str
    configs: tuple = ()
    dataset: str | None = None
    ot: str | None = None
    study: GMStudy | None = None

    def n_train(self) -> int:
        """Training samples per epoch (the subset, else the full dataset)."""
        subset = self.configs[0].data.subset
        return subset[0] if subset else FULL_TRAIN_SIZE[self.dataset]

    @property
    def cost_images(self) -> int:
        """Training images processed: sum over configs of epochs x n_train (0 for "gm")."""
        if self.kind == "gm":
            return 0
        return sum(c.epochs * self.n_train() for c in self.configs)

    def point(self, lr: float, weight_decay: float):
        """The config of grid point (lr, wd), or None."""
        for c in self.configs:
            if c.lr == lr and c.weight_decay == weight_decay:
                return c
        return None


def _cnn_config(experiment: str, scale: Scale, data: str, *, arch: str, width: int | None,
                lr: float, weight_decay: float, epochs: int, save_at: Sequence[int],
                subset: tuple[int, int] | None):
    defaults = EXPERIMENTS[experiment].defaults
    config = defaults.replace(
        # Resolved here: every record and identity of the plan holds the precision that runs.
        precision=resolve_precision(defaults.train.precision),
        arch=arch, width=width, lr=lr, weight_decay=weight_decay, epochs=epochs,
        batch_size=scale.batch_size, save_features_at=tuple(save_at),
        checkpoint_every=scale.checkpoint_every, schedule=scale.schedule,
        augment=scale.augment)
    return dataclasses.replace(
        config, data=DataConfig(data, subset),
        analysis=AnalysisConfig(scale.clp_reduce, scale.clp_max_tsne_points,
                                scale.permutations)).validate()


def _gm_items(scale: Scale) -> list[PlanItem]:
    g = scale.gm
    config = GMConfig(samples_per_cluster=g.samples_per_cluster, d_input=g.d, d_hidden=g.d,
                      steps=g.steps)
    studies = [
        (GM_D_INPUT, GMStudy("d_input", config, g.seeds, g.d_values, g.sigma2s, figure=18),
         "App. B Fig. 18: MSDR of the hidden layer against sigma^2, one line per input "
         "dimension"),
        (GM_D_HIDDEN, GMStudy("d_hidden", config, g.seeds, g.d_values, g.sigma2s, figure=19),
         "App. B Fig. 19: the same, one line per hidden width"),
        (GM_WEIGHT_DECAY, GMStudy("weight_decay", config, g.seeds, g.wd_values, g.sigma2s,
                                  figure=20),
         "App. B Fig. 20: the same, one line per weight decay"),
        (GM_TAU2, GMStudy("tau2", config, g.seeds, g.tau2s, (g.tau2_sigma2,), figure=21),
         "App. B.1 Fig. 21: MSDR of similar / dissimilar subclasses against tau^2"),
    ]
    pytorch = dataclasses.replace(config, **PYTORCH_DEFAULTS)
    items = []
    for name, study, purpose in studies:
        items.append(PlanItem(name, "gm", purpose, study=study))
        items.append(PlanItem(pytorch_variant(name), "gm", f"{purpose}; PyTorch's defaults",
                              study=dataclasses.replace(study, config=pytorch)))
    return items


def build_plan(scale: Scale | str, cifar10: str = "cifar10", cifar100: str = "cifar100"
               ) -> list[PlanItem]:
    """Every item of the paper at ``scale``, in the order they run (the OT baseline first:
    the coarse runs read it).

    Args:
      scale: a :class:`Scale` or its name ("tiny", "cpu", "full").
      cifar10, cifar100: dataset names or paths written into the configs.

    Returns:
      The items; names are unique.
    """
    if isinstance(scale, str):
        scale = get_scale(scale)
    s = scale
    main_arch, main_width = s.archs["main"]

    def cnn(experiment, data, arch=main_arch, width=main_width, lr=s.lr, wd=s.weight_decay,
            epochs=s.epochs, save_at=s.save_at, role="main"):
        return _cnn_config(experiment, s, data, arch=arch, width=width, lr=lr,
                           weight_decay=wd, epochs=epochs, save_at=save_at,
                           subset=s.role_subsets.get(role, s.subset))

    items = [
        PlanItem(OT, "run", "OT baseline: the same network on the 10 original labels "
                 "(the OT bar of Figs. 11-12)", (cnn("original_cifar10", cifar10),), "cifar10"),
        PlanItem(GRID, "grid", "Coarse CIFAR-10 lr x wd grid (Figs. 24-27, 31) with the "
                 "weight decay 0 column (App. A); its point "
                 f"lr{s.lr:g}_wd{s.weight_decay:g} is the main run (Sec. 4, Figs. 3, 5-8, 11-12)",
                 tuple(cnn("coarse_cifar10", cifar10, lr=lr, wd=wd)
                       for lr in s.grid_lrs for wd in s.grid_wds), "cifar10", ot=OT),
        PlanItem(LONG, "run", f"Coarse CIFAR-10 trained {s.long_epochs} epochs at the "
                 f"paper's config #2 (lr {s.long_lr:g}, wd {s.long_weight_decay:g}; the "
                 "paper's 1,000-epoch run, scaled)",
                 (cnn("coarse_cifar10", cifar10, lr=s.long_lr, wd=s.long_weight_decay,
                      epochs=s.long_epochs, save_at=s.long_save_at),),
                 "cifar10", ot=OT),
        PlanItem(FINE, "run", "Fine CIFAR-10: 20 labels, each class split in two at random "
                 "(Sec. 4, eq. 5)", (cnn("fine_cifar10", cifar10),), "cifar10", ot=OT),
        PlanItem(RANDOM, "run", "random coarse CIFAR-10: classes shuffled, then y mod 5 "
                 "(App. F)", (cnn("random_coarse_cifar10", cifar10),), "cifar10", ot=OT),
    ]

    def backbone(role, name, what):
        if role not in s.archs:
            return []
        arch, width = s.archs[role]
        return [PlanItem(name, "run", what, (cnn("coarse_cifar10", cifar10, arch=arch,
                                                 width=width, role=role),), "cifar10")]

    items += backbone("vgg", VGG, "VGG on Coarse CIFAR-10 (App. H)")
    items += [
        PlanItem(CIFAR100_COARSE, "run", "Coarse CIFAR-100: 20 labels y mod 20",
                 (cnn("coarse_cifar100", cifar100),), "cifar100"),
        PlanItem(CIFAR100_SUPER, "run", "CIFAR-100's 20 official superclasses",
                 (cnn("cifar100_superclasses", cifar100),), "cifar100"),
    ]
    # DenseNet last: by far the costliest backbone per image on a CPU, so a plan cut short
    # still has every other claim's evidence.
    return items + _gm_items(s) + backbone("densenet", DENSENET,
                                           "DenseNet-121 on Coarse CIFAR-10 (App. G)")


def get_scale(name: str) -> Scale:
    """The :class:`Scale` called ``name``; ConfigError for an unknown one."""
    try:
        return SCALES[name]
    except KeyError:
        raise ConfigError(f"--scale {name!r}: must be one of {', '.join(SCALES)}") from None


def select(plan: Sequence[PlanItem], only: Sequence[str] | None) -> list[PlanItem]:
    """The items named in ``only`` (all when None); "gm" names every Gaussian-mixture
    sweep. ConfigError naming an unknown name and the known ones."""
    if not only:
        return list(plan)
    names = {i.name for i in plan}
    wanted = set()
    for name in only:
        if name == "gm":
            wanted |= {i.name for i in plan if i.kind == "gm"}
        elif name in names:
            wanted.add(name)
        else:
            raise ConfigError(f"--only {name}: not an item of this plan (items: "
                              f"{', '.join(i.name for i in plan)}, or gm)")
    return [i for i in plan if i.name in wanted]


def _fmt_images(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}G"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


def describe_configs(item: PlanItem) -> str:
    """One line of what an item trains: arch, width, lr, wd, epochs, subset."""
    if item.kind == "gm":
        st = item.study
        c = st.config
        grid = (f"tau2 {list(st.values)} at sigma2 {st.sigma2s[0]:g}" if st.vary == "tau2"
                else f"{st.vary} {list(st.values)} x sigma2 {list(st.sigma2s)}")
        return (f"MLP {c.d_input}->{c.d_hidden}->{c.num_clusters // 2}, {grid}, {st.seeds} seeds, "
                f"{c.steps} GD steps on {c.num_clusters}x{c.samples_per_cluster} samples")
    c = item.configs[0]
    width = "paper width" if c.train.width is None else f"width {c.train.width}"
    subset = "all samples" if c.data.subset is None else \
        f"subset {c.data.subset[0]:,}/{c.data.subset[1]:,}"
    lrs = sorted({x.lr for x in item.configs}, reverse=True)
    wds = sorted({x.weight_decay for x in item.configs}, reverse=True)
    hyper = (f"lr {'/'.join(f'{x:g}' for x in lrs)} x wd {'/'.join(f'{x:g}' for x in wds)}"
             if item.kind == "grid" else f"lr {c.lr:g}, wd {c.weight_decay:g}")
    augment = "" if c.train.augment else ", no augmentation"
    return (f"{c.experiment}: {c.arch} ({width}), {hyper}, {c.train.schedule} schedule, "
            f"{c.epochs} epochs, batch {c.train.batch_size}{augment}, {subset}, features at "
            f"{list(c.train.save_features_at)}")


def plan_table(plan: Sequence[PlanItem], root: Path, estimate=None,
               skipped: Callable[[PlanItem], str | None] | None = None) -> str:
    """The ``--dry-run`` text: every item with its workdir and cost, then the totals.

    Args:
      plan: the items (already selected).
      root: DIR.
      estimate: optional ``item -> seconds`` (the scale's CPU time estimate).
      skipped: optional ``item -> reason`` for items that will be skipped (their data set
        is not given); they are listed with the reason and left out of the totals.
    """
    lines = []
    total_images = total_steps = 0
    total_s = 0.0
    counted = 0
    for n, item in enumerate(plan, 1):
        reason = skipped(item) if skipped is not None else None
        if item.kind == "gm":
            cost = f"{item.study.runs} MLP runs, {_fmt_images(item.study.sample_steps)} sample-steps"
        else:
            per = item.configs[0].epochs * item.n_train()
            cost = (f"{len(item.configs)} runs x {_fmt_images(per)} = "
                    f"{_fmt_images(item.cost_images)} images" if item.kind == "grid"
                    else f"{_fmt_images(item.cost_images)} images "
                         f"({item.configs[0].epochs} epochs x {item.n_train():,})")
        est = ""
        if reason is None:
            counted += 1
            if item.kind == "gm":
                total_steps += item.study.sample_steps
            else:
                total_images += item.cost_images
            if estimate is not None:
                seconds = estimate(item)
                total_s += seconds
                est = (", est. unknown (backbone not calibrated)" if not math.isfinite(seconds)
                       else ", est. <1 min" if seconds < 30 else f", est. {seconds / 60:.0f} min")
        state = item.kind if reason is None else f"skipped: {reason}"
        lines.append(f"{n:2d}. {item.name} [{state}] -> {root / item.name}")
        lines.append(f"    {describe_configs(item)}")
        if item.kind == "grid":
            lines.append("    points: " + ", ".join(
                f"lr{c.lr:g}_wd{c.weight_decay:g}" for c in item.configs))
        lines.append(f"    cost: {cost}{est}" + ("" if reason is None else " (not counted)"))
        lines.append(f"    why: {item.purpose}")
    left_out = len(plan) - counted
    lines.append(f"total: {counted} items, {_fmt_images(total_images)} training images, "
                 f"{_fmt_images(total_steps)} Gaussian-mixture sample-steps"
                 + (f" ({left_out} skipped item(s) not counted)" if left_out else ""))
    if estimate is not None and math.isfinite(total_s):
        lines.append(f"estimated time on an idle 2-core CPU: {total_s / 3600:.1f} h (CPU "
                     "seconds of calibration runs / 2 cores; longer on a loaded machine)")
    return "\n".join(lines)
