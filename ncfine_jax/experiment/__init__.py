"""Paper experiments as one pipeline: data -> label transform -> train -> analysis.

Modules: config (``ExperimentConfig`` and the flags every script shares), registry
(``EXPERIMENTS``: the paper's experiments and their defaults), run (one run in one
workdir: ``run_experiment``, ``main``), grid (an lr x wd grid of one experiment:
``run_grid``, the grid CLI, ``summary.json``).
"""

from ncfine_jax.experiment.config import (FLAGS, NON_IDENTITY_FIELDS, PAPER_SAVE_EPOCHS,
                                          AnalysisConfig, DataConfig, ExperimentConfig,
                                          LabelConfig, add_config_flags, config_from_args,
                                          identity)
from ncfine_jax.experiment.registry import EXPERIMENTS, ExperimentSpec
from ncfine_jax.experiment.run import (PreparedData, build_parser, check_ot_workdir,
                                       default_workdir, main, prepare_data, run_experiment,
                                       summary_line)

__all__ = [
    "AnalysisConfig", "DataConfig", "EXPERIMENTS", "ExperimentConfig", "ExperimentSpec",
    "FLAGS", "LabelConfig", "NON_IDENTITY_FIELDS", "PAPER_SAVE_EPOCHS", "PreparedData",
    "add_config_flags", "build_parser", "check_ot_workdir", "config_from_args",
    "default_workdir", "identity", "main", "prepare_data", "run_experiment", "summary_line",
]
