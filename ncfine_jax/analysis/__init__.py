"""Analysis of saved features: t-SNE / PCA, linear probes, Cluster-and-Linear-Probe,
paper figures and the per-run report.

Modules:
  embedding  ``tsne`` (openTSNE or scikit-learn), ``pca``
  probe      ``fit_linear_probe`` / ``LinearProbe`` (softmax regression, optax L-BFGS)
  clp        ``cluster_and_linear_probe``, ``lpo_accuracy``, ``best_cluster_mapping``
  figures    PNG figures (heatmaps, NC curves, t-SNE grid, bars, lr x wd grids)
  report     ``analyze_run(workdir, ...)`` -> results.json, report.md, figures/;
             ``grid_figures(points, out_dir)`` for the lr x wd grid
"""

from ncfine_jax.analysis.clp import best_cluster_mapping, cluster_and_linear_probe, lpo_accuracy
from ncfine_jax.analysis.embedding import pca, tsne
from ncfine_jax.analysis.probe import LinearProbe, fit_linear_probe, linear_probe_accuracy

__all__ = [
    "LinearProbe",
    "analyze_run",
    "best_cluster_mapping",
    "cluster_and_linear_probe",
    "fit_linear_probe",
    "grid_figures",
    "linear_probe_accuracy",
    "lpo_accuracy",
    "pca",
    "tsne",
]


def __getattr__(name):
    # The report pulls in matplotlib; import it only when asked for.
    if name in ("analyze_run", "grid_figures"):
        from ncfine_jax.analysis import report

        return getattr(report, name)
    raise AttributeError(f"module 'ncfine_jax.analysis' has no attribute {name!r}")
