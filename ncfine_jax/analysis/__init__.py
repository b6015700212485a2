"""Analysis of saved features: t-SNE / PCA, linear probes, Cluster-and-Linear-Probe,
paper figures and the per-run report.

Modules:
  embedding  ``tsne`` (openTSNE or scikit-learn), ``pca``, ``all_rows_equal``
  probe      ``fit_linear_probe`` / ``LinearProbe`` (softmax regression, optax L-BFGS)
  clp        ``cluster_and_linear_probe``, ``lpo_accuracy``, ``best_cluster_mapping``
  inputs     feature files (.npz / .npy / folders, memory-mapped) and their checks
  views      ``label_view(mapping)``: what each label kind means for D, MSDR, the null, CLP
  pipeline   ``analyze_features(features, out_dir, ...)``: the one analysis path, i.e.
             ``analyze(features, ...) -> Analysis`` (no I/O) then ``write_analysis``
  results    ``Results``: the typed content of results.json (``to_dict`` / ``from_dict``)
  outputs    figures, results.json, report.md, distance_matrices.npz
  report     ``analyze_run(workdir, ...)``: ``analyze_features`` on a training workdir
  grid       ``grid_figures(points, out_dir, ...)`` for the lr x wd grid
  figures    PNG figures (heatmaps, NC curves, t-SNE grid, bars, lr x wd grids)
"""

from ncfine_jax.analysis.clp import best_cluster_mapping, cluster_and_linear_probe, lpo_accuracy
from ncfine_jax.analysis.embedding import pca, tsne
from ncfine_jax.analysis.probe import LinearProbe, fit_linear_probe, linear_probe_accuracy

__all__ = [
    "LinearProbe",
    "analyze",
    "analyze_features",
    "analyze_run",
    "best_cluster_mapping",
    "cluster_and_linear_probe",
    "fit_linear_probe",
    "grid_figures",
    "linear_probe_accuracy",
    "lpo_accuracy",
    "pca",
    "tsne",
    "write_analysis",
]

# These load the whole analysis (the NC metrics, jax); they are imported only when asked for.
_LAZY = {"analyze": "pipeline", "analyze_features": "pipeline", "write_analysis": "pipeline", "analyze_run": "report", "grid_figures": "grid"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"ncfine_jax.analysis.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ncfine_jax.analysis' has no attribute {name!r}")
