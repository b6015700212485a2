"""Paper experiments as one pipeline: data -> label transform -> train -> analysis.

Modules: config (``ExperimentConfig``, the flags every script shares, the default
workdir), registry (``EXPERIMENTS``: the paper's experiments and their defaults), cli (the
command line of the scripts and of the grid, parsed before the heavy packages load), run
(one run in one workdir: ``run_experiment``), grid (an lr x wd grid of one experiment:
``run_grid``, ``summary.json``).
"""

from ncfine_jax.lazy import exports

# Names are imported from their modules when first read (ncfine_jax.lazy), so that a
# command can parse its flags before jax and the other heavy packages load.
__getattr__, __dir__, __all__ = exports(__name__, {
    "config": [
        "FLAGS", "NON_IDENTITY_FIELDS", "PAPER_SAVE_EPOCHS", "AnalysisConfig",
        "DataConfig", "ExperimentConfig", "LabelConfig", "add_config_flags",
        "config_from_args", "default_workdir", "identity",
    ],
    "registry": ["EXPERIMENTS", "PAPER_LRS", "PAPER_WDS", "ExperimentSpec"],
    "cli": ["build_grid_parser", "build_parser", "grid_main", "main"],
    "run": ["PreparedData", "check_ot_workdir", "prepare_data", "run_experiment", "summary_line"],
})
