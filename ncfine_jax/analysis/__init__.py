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

from ncfine_jax.lazy import exports

# Names are imported from their modules when first read (ncfine_jax.lazy), so that a
# command can parse its flags before jax and the other heavy packages load.
__getattr__, __dir__, __all__ = exports(__name__, {
    "clp": ["best_cluster_mapping", "cluster_and_linear_probe", "lpo_accuracy"],
    "embedding": ["pca", "tsne"],
    "probe": ["LinearProbe", "fit_linear_probe", "linear_probe_accuracy"],
    "pipeline": ["analyze", "analyze_features", "write_analysis"],
    "report": ["analyze_run"],
    "grid": ["grid_figures"],
})
