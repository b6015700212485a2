"""``AnalysisOptions``: how saved features are analysed (one object for every analysis)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ncfine_jax.analysis.clp import MIN_TSNE_POINTS, REDUCTIONS
from ncfine_jax.analysis.significance import SignificanceOptions
from ncfine_jax.errors import ConfigError

K_SELECTIONS = (None, "silhouette")


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """Options of ``analyze_features`` / ``analyze_run``.

    Attributes:
      reduce: CLP reduction before KMeans, one of ``clp.REDUCTIONS`` ("tsne": the paper).
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
