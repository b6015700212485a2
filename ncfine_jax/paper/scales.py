"""The three scales of the paper plan: ``full`` (the paper's settings), ``cpu`` (the same
plan reduced for a 2-core CPU; ``--dry-run`` prints its time estimate) and ``tiny``
(minutes; the tests run it).

A scale fixes everything a plan item needs: the CIFAR subset, each backbone and its
width, epochs, the saved feature epochs, the main (lr, wd), the grid and the
Gaussian-mixture sizes. What each item trains is built from these in ``plan.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ncfine_jax.experiment.registry import PAPER_LRS, PAPER_WDS


@dataclass(frozen=True)
class GMScale:
    """Sizes of the Gaussian-mixture sweeps (App. B, Figs. 18-21).

    Attributes:
      samples_per_cluster: samples of each of the 8 clusters.
      d: input dimension and hidden width of the base MLP.
      steps: full-batch GD steps.
      seeds: seeds per grid point.
      sigma2s: the x-axis sigma^2 grid of Figs. 18-20.
      d_values: input dimensions (Fig. 18) and hidden widths (Fig. 19).
      wd_values: weight decays (Fig. 20).
      tau2s: tau^2 grid (Fig. 21), at sigma^2 = ``tau2_sigma2``.
      tau2_sigma2: the fixed sigma^2 of Fig. 21.
    """

    samples_per_cluster: int
    d: int
    steps: int
    seeds: int
    sigma2s: tuple[float, ...]
    d_values: tuple[int, ...]
    wd_values: tuple[float, ...]
    tau2s: tuple[float, ...]
    tau2_sigma2: float = 4.0


@dataclass(frozen=True)
class Scale:
    """Settings of every run of the paper plan at one scale.

    Attributes:
      name: "tiny", "cpu" or "full".
      summary: a few words for ``--help``.
      description: one line for the plan and the report.
      subset: (n_train, n_test) class-stratified CIFAR subset, or None for every sample.
      archs: role -> (backbone, width or None for the paper's width). Roles: "main"
        (every run but the backbone comparison), "densenet" (App. G), "vgg" (App. H);
        a missing role is not in the plan.
      role_subsets: role -> (n_train, n_test) replacing ``subset`` for that role's run.
      batch_size: global batch size.
      epochs: epochs of every run but the long one.
      save_at: feature epochs of those runs (1-based; the last is ``epochs``).
      long_epochs, long_save_at: the long run (the paper's 1,000 epochs).
      long_lr, long_weight_decay: the long run's setting (the paper's config #2).
      lr, weight_decay: the main run, a point of the grid.
      schedule: the lr schedule of every run.
      augment: image augmentation (crop + flip) on or off in every run.
      grid_lrs, grid_wds: the lr x wd grid (wd 0 is App. A's column).
      clp_reduce, clp_max_tsne_points: the CLP analysis.
      permutations: draws of each run's permutation nulls. The report adjusts the claims'
        p-values for their number (Holm), so the smallest attainable p-value, 1 / (draws
        + 1), must clear alpha / claims: with about 12 tested claims at alpha 0.01 that
        takes more than 1,200 draws.
      checkpoint_every: epochs between checkpoints (a killed run resumes from the last).
      gm: the Gaussian-mixture sweeps.
    """

    name: str
    summary: str
    description: str
    subset: tuple[int, int] | None
    archs: dict = field(hash=False)
    batch_size: int
    epochs: int
    save_at: tuple[int, ...]
    long_epochs: int
    long_save_at: tuple[int, ...]
    lr: float
    weight_decay: float
    grid_lrs: tuple[float, ...]
    grid_wds: tuple[float, ...]
    clp_reduce: str
    clp_max_tsne_points: int | None
    permutations: int
    checkpoint_every: int
    gm: GMScale
    long_lr: float
    long_weight_decay: float
    schedule: str
    augment: bool
    role_subsets: dict = field(default_factory=dict, hash=False)


FULL = Scale(
    name="full",
    summary="the paper's settings, a GPU job",
    description="the paper's settings: full CIFAR, ResNet-18 / DenseNet-121 / VGG-16 at the "
                "paper's widths, 350 epochs (one run 1,000), the 3 x 4 lr x wd grid, t-SNE CLP "
                "on every point, Gaussian mixtures at the paper's sizes (a GPU job)",
    subset=None,
    archs={"main": ("resnet18", None), "densenet": ("densenet121", None),
           "vgg": ("vgg16", None)},
    batch_size=128, epochs=350, save_at=(20, 120, 240, 350),
    long_epochs=1000, long_save_at=(20, 120, 240, 350, 500, 750, 1000),
    lr=0.01, weight_decay=5e-4, grid_lrs=PAPER_LRS, grid_wds=PAPER_WDS + (0.0,),
    clp_reduce="tsne", clp_max_tsne_points=None, permutations=2000, checkpoint_every=10,
    gm=GMScale(samples_per_cluster=500, d=512, steps=1000, seeds=10,
               sigma2s=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
               d_values=(128, 256, 512, 1024), wd_values=(0.0, 1e-4, 1e-3, 1e-2),
               tau2s=(0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0)),
    long_lr=0.01, long_weight_decay=5e-5, schedule="step", augment=True,
)

# The cpu scale reaches the terminal phase (training accuracy 1.0, NC1 down > 10x) on a
# 2-core CPU: a pilot of ResNet-18 at width 16 on 2,500 / 1,000 images, lr 0.05 cosine,
# wd 5e-4, batch 128 reached training accuracy 1.000 by epoch 20 without augmentation, and
# only 0.80 after 40 epochs with it. README lists the measured times and values.
CPU = Scale(
    name="cpu",
    summary="every experiment reduced for a 2-core CPU, about 2 h",
    description="the paper's plan reduced for a 2-core CPU so that the networks reach the "
                "terminal phase: 2,500 / 1,000 CIFAR-10 images, no augmentation, ResNet-18 at "
                "width 16, lr 0.05 cosine, 30 epochs (the long run: config #2, lr 0.01, wd "
                "5e-5, 60 epochs), a 2 x 2 grid (lr 0.05 / 0.01 x wd 5e-4 / 0), VGG-16 and "
                "DenseNet-121 at width 8 (DenseNet on 1,000 / 400 images: by far the costliest "
                "backbone per image on XLA:CPU), t-SNE CLP on at most 1,000 points per label, "
                "Gaussian mixtures at d = 64 with 3 seeds under both parameterisations",
    subset=(2500, 1000),
    archs={"main": ("resnet18", 16), "densenet": ("densenet121", 8), "vgg": ("vgg16", 8)},
    role_subsets={"densenet": (1000, 400)},
    batch_size=128, epochs=30, save_at=(1, 3, 5, 10, 15, 20, 30),
    long_epochs=60, long_save_at=(1, 5, 10, 20, 30, 45, 60),
    lr=0.05, weight_decay=5e-4, grid_lrs=(0.05, 0.01), grid_wds=(5e-4, 0.0),
    clp_reduce="tsne", clp_max_tsne_points=1000, permutations=2000, checkpoint_every=5,
    gm=GMScale(samples_per_cluster=100, d=64, steps=1000, seeds=3,
               sigma2s=(0.0, 0.5, 1.0, 2.0, 4.0, 16.0, 64.0),
               d_values=(16, 32, 64, 128), wd_values=(0.0, 1e-3, 1e-2),
               tau2s=(0.0, 0.5, 1.0, 4.0, 16.0)),
    long_lr=0.01, long_weight_decay=5e-5, schedule="cosine", augment=False,
)

TINY = Scale(
    name="tiny",
    summary="a smoke test of the pipeline, minutes on a CPU",
    description="a smoke test of the whole plan in minutes: 300 / 100 images, a width-8 MLP "
                "in place of every backbone (no DenseNet / VGG runs), 2 epochs (the long run "
                "4), a 1 x 2 grid (wd 5e-4 and 0), PCA instead of t-SNE in CLP, tiny Gaussian "
                "mixtures; its networks stay far from the terminal phase, so its verdicts on "
                "trained networks read 'uninformative': it tests the pipeline, not the paper",
    subset=(300, 100),
    archs={"main": ("mlp", 8)},
    batch_size=20, epochs=2, save_at=(1, 2),
    long_epochs=4, long_save_at=(1, 4),
    lr=0.01, weight_decay=5e-4, grid_lrs=(0.01,), grid_wds=(5e-4, 0.0),
    clp_reduce="pca", clp_max_tsne_points=None, permutations=200, checkpoint_every=1,
    gm=GMScale(samples_per_cluster=20, d=16, steps=100, seeds=2, sigma2s=(0.0, 1.0, 4.0, 16.0),
               d_values=(8, 16), wd_values=(0.0, 1e-2), tau2s=(0.0, 1.0, 4.0)),
    long_lr=0.01, long_weight_decay=5e-5, schedule="step", augment=False,
)

SCALES = {s.name: s for s in (TINY, CPU, FULL)}
