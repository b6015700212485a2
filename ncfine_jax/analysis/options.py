"""How saved features are analysed: ``AnalysisOptions`` (every option of an analysis) and
``SignificanceOptions`` (the fine-structure test), with the values they may take.

This module imports nothing heavy: the command-line flags are built from it before jax and
scikit-learn load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ncfine_jax.errors import ConfigError

REDUCTIONS = ("tsne", "pca", "none")  # the reductions before KMeans in CLP ("tsne": the paper's)
# Fewest points per label that ``max_tsne_points`` may cap t-SNE at.
MIN_TSNE_POINTS = 20
K_SELECTIONS = (None, "silhouette")


@dataclass(frozen=True)
class SignificanceOptions:
    """How the fine-structure test is run.

    Attributes:
      alpha: significance level of the verdict (0 < alpha < 1).
      permutations: null draws (>= 1; p-values are multiples of 1 / (1 + permutations)).
      bootstrap: bootstrap resamples for the intervals (0: no intervals).
      seed: seeds every draw.
    """

    alpha: float = 0.01
    permutations: int = 500
    bootstrap: int = 200
    seed: int = 0

    def validate(self) -> "SignificanceOptions":
        """ConfigError naming a bad option; returns self."""
        if not (isinstance(self.alpha, float | int) and 0 < self.alpha < 1):
            raise ConfigError(f"alpha: must be in (0, 1), got {self.alpha!r}")
        for name, low in (("permutations", 1), ("bootstrap", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ConfigError(f"{name}: must be an integer >= {low}, got {v!r}")
        return self


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """Options of ``analyze_features`` / ``analyze_run``.

    Attributes:
      reduce: CLP reduction before KMeans, one of ``REDUCTIONS`` ("tsne": the paper).
      seed: seeds t-SNE, KMeans, PCA, subsampling and the significance tests (unless
        ``significance`` sets its own).
      k_selection: None (k = classes per label) or "silhouette".
      max_tsne_points: per-label t-SNE cap inside CLP (the rest joined by 10-NN); None =
        every point.
      tsne_backend: "opentsne", "sklearn" or None (openTSNE when importable).
      probe_kwargs: passed to ``fit_linear_probe`` (e.g. ``{"solver": "sklearn"}``).
      heatmap_epochs: epochs of the D-heatmap figure (default: up to 6); each must be an
        analysed epoch.
      figure_tsne_points: points per group for a t-SNE computed only for a figure.
      make_figures: write figures (False: results.json, report.md, D only).
      chunk_rows: rows per chunk of the streamed metrics (default ~8M values).
      significance: the fine-structure test (``SignificanceOptions``; None:
        ``SignificanceOptions(seed=seed)``; False: not run, the block says so).
    """

    reduce: str = "tsne"
    seed: int = 0
    k_selection: str | None = None
    max_tsne_points: int | None = None
    tsne_backend: str | None = None
    probe_kwargs: Mapping[str, Any] | None = None
    heatmap_epochs: Sequence[int] | None = None
    figure_tsne_points: int = 2000
    make_figures: bool = True
    chunk_rows: int | None = None
    significance: SignificanceOptions | bool | None = None

    def validate(self) -> "AnalysisOptions":
        """ConfigError (one line naming the option) for a bad value."""
        if self.reduce not in REDUCTIONS:
            raise ConfigError(f"reduce: unknown {self.reduce!r}; choose one of "
                              f"{', '.join(REDUCTIONS)}")
        if self.k_selection not in K_SELECTIONS:
            raise ConfigError(f"k_selection: unknown {self.k_selection!r}; choose None or "
                              "'silhouette'")
        if self.max_tsne_points is not None and self.max_tsne_points < MIN_TSNE_POINTS:
            raise ConfigError(f"max_tsne_points: {self.max_tsne_points} is too few for t-SNE "
                              f"(need >= {MIN_TSNE_POINTS})")
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise ConfigError(f"chunk_rows: must be >= 1, got {self.chunk_rows}")
        self.significance_options()  # validated
        return self

    @property
    def tests_significance(self) -> bool:
        """Whether the fine-structure test is asked for."""
        return self.significance is not False

    def significance_options(self) -> SignificanceOptions:
        """The validated ``SignificanceOptions`` (the default one when not set or off)."""
        opts = self.significance
        if not isinstance(opts, SignificanceOptions):
            opts = SignificanceOptions(seed=self.seed)
        return opts.validate()
