"""Gaussian-mixture MLP study (paper App. B and B.1), vmapped over seeds and grids.

Setting: ``C = num_clusters`` Gaussian clusters in ``R^d`` (cluster means
``mu_c ~ N(0, sigma2 I)``, inputs ``x ~ N(mu_c, I)``), coarsened into ``C / 2``
superclasses by the paper's eq. 4 (cluster ``c`` -> superclass ``c mod C/2``). A 2-layer
MLP ``d_input -> d_hidden (ReLU) -> C/2`` is trained on the coarse labels by full-batch
gradient descent; the hidden activation is the representation, and the study measures
its MSDR over the ``C`` original clusters (``ncfine_jax.metrics.msdr``), the final
coarse training accuracy and how far the hidden features moved from initialisation.

Modules:
    data: the mixture (:func:`make_gaussian_mixture`, the B.1 ``tau2`` variant).
    model: the MLP under the ``standard``, ``ntk`` and ``mup`` parameterisations,
        input scaling, full-batch GD (:func:`train_mlp`).
    config: :class:`GMConfig` and the default step sizes.
    study: one run, vmapped sweeps, figure sweeps as records, diverged runs.
    reference: the float64 NumPy transcription used by the tests.
    figures: the layout of Figs. 18-21 (:func:`plot_records`).
"""

from ncfine_jax.lazy import exports

# Names are imported from their modules when first read (ncfine_jax.lazy), so that a
# command can parse its flags before jax and the other heavy packages load.
__getattr__, __dir__, __all__ = exports(__name__, {
    "config": [
        "DEFAULT_INPUT_SCALING", "DEFAULT_LR", "DEFAULT_LRS", "DEFAULT_PARAMETERIZATION",
        "DEFAULT_SIGMA2_GRID", "DEFAULT_TAU2_GRID", "DEFAULT_TAU2_SIGMA2", "DEFAULT_VALUES",
        "GMConfig", "INPUT_SCALINGS", "PARAMETERIZATIONS", "SIZE_MAX", "VARY_CHOICES",
        "default_lr",
    ],
    "data": ["coarse_of_cluster", "make_gaussian_mixture", "similar_superclasses"],
    "figures": ["SPLIT_AT", "plot_records"],
    "model": [
        "Params", "forward_multipliers", "init_mlp", "loss_fn", "lr_multipliers", "mlp_apply",
        "scale_inputs", "train_mlp",
    ],
    "reference": ["numpy_reference_run"],
    "study": [
        "RECORD_KEYS", "RUN_KEYS", "divergence_report", "feature_movement", "run_single",
        "run_single_jit", "run_study", "run_sweep",
    ],
})
