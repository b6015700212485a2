"""Static configuration of a Gaussian-mixture study: sizes, steps, parameterisation, step
size, the sweeps' grids. Plain Python (no jax): the scripts build their flags from it
before jax loads."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ncfine_jax.errors import ConfigError

PARAMETERIZATIONS = ("standard", "ntk", "mup")
INPUT_SCALINGS = ("none", "rms")
DEFAULT_PARAMETERIZATION = "mup"
DEFAULT_INPUT_SCALING = "rms"
# What a sweep varies, and its default grids.
VARY_CHOICES = ("sigma2", "d_input", "d_hidden", "weight_decay", "tau2")
DEFAULT_SIGMA2_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
DEFAULT_TAU2_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0)
DEFAULT_TAU2_SIGMA2 = 4.0  # Fig. 21: tau2 swept at sigma2 = 4
DEFAULT_VALUES = {
    "d_input": (128, 256, 512, 1024),
    "d_hidden": (128, 256, 512, 1024),
    "weight_decay": (0.0, 1e-4, 1e-3, 1e-2),
}
SIZE_MAX = 2**31 - 1  # sizes, sample counts and steps index int32 arrays and loop counters

# Default GD step size per (parameterization, input_scaling); a pair missing here has no
# default and needs an explicit lr. How each value was chosen: docs/gaussian_mixture.md.
DEFAULT_LRS: dict[tuple[str, str], float] = {
    ("mup", "rms"): 0.5,
    ("ntk", "rms"): 2.0,
    ("standard", "none"): 0.01,
}
DEFAULT_LR = DEFAULT_LRS[(DEFAULT_PARAMETERIZATION, DEFAULT_INPUT_SCALING)]


def check_parameterization(parameterization: str) -> str:
    """Returns ``parameterization`` or raises ConfigError naming the choices."""
    if parameterization not in PARAMETERIZATIONS:
        raise ConfigError(f"parameterization: unknown {parameterization!r}; choose from "
                          f"{', '.join(PARAMETERIZATIONS)}")
    return parameterization


def check_sizes(**sizes: Any) -> None:
    """ConfigError naming the first size that is not a positive integer."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"{name}: must be a positive integer, got {value!r}")


def default_lr(parameterization: str, input_scaling: str) -> float:
    """The default step size of a (parameterisation, input scaling) pair.

    Raises:
        ConfigError: the pair has no default (pass ``lr`` explicitly).
    """
    try:
        return DEFAULT_LRS[(parameterization, input_scaling)]
    except KeyError:
        known = ", ".join(f"{p}/{s}" for p, s in DEFAULT_LRS)
        raise ConfigError(f"lr: no default step size for parameterization={parameterization}, "
                          f"input_scaling={input_scaling} (defaults exist for {known}); "
                          f"give one explicitly") from None


@dataclasses.dataclass(frozen=True)
class GMConfig:
    """Static configuration of one study (hashable: used as a jit static argument).

    Attributes:
        num_clusters: C original clusters (superclasses: C / 2).
        samples_per_cluster: samples per cluster (n = C * this).
        d_input: input dimension.
        d_hidden: hidden width (representation dimension).
        steps: full-batch GD steps.
        lr: GD step size (dimensionless); None takes :func:`default_lr` of the
            parameterisation and input scaling. Read it as :attr:`learning_rate`.
        parameterization: ``standard``, ``ntk`` or ``mup`` (``ncfine_jax.gaussian_mixture.model``).
        input_scaling: ``none`` (raw inputs) or ``rms`` (divided by their global RMS entry).
    """

    num_clusters: int = 8
    samples_per_cluster: int = 500
    d_input: int = 512
    d_hidden: int = 512
    steps: int = 1000
    lr: float | None = None
    parameterization: str = DEFAULT_PARAMETERIZATION
    input_scaling: str = DEFAULT_INPUT_SCALING

    @property
    def learning_rate(self) -> float:
        """The step size used: ``lr``, or the default of the parameterisation."""
        if self.lr is None:
            return default_lr(self.parameterization, self.input_scaling)
        return float(self.lr)

    def validate(self) -> "GMConfig":
        """Raises ConfigError on a bad field; returns self."""
        check_sizes(num_clusters=self.num_clusters, samples_per_cluster=self.samples_per_cluster,
                     d_input=self.d_input, d_hidden=self.d_hidden, steps=self.steps)
        for name in ("num_clusters", "samples_per_cluster", "d_input", "d_hidden", "steps"):
            if getattr(self, name) > SIZE_MAX:
                raise ConfigError(f"{name}: must be an integer in 1..{SIZE_MAX}, got "
                                  f"{getattr(self, name)}")
        n = self.num_clusters * self.samples_per_cluster
        if n > SIZE_MAX:
            raise ConfigError(f"samples_per_cluster: {self.num_clusters} clusters x "
                              f"{self.samples_per_cluster} = {n} samples, more than {SIZE_MAX}")
        if self.num_clusters % 2 or self.num_clusters < 4:
            raise ConfigError(f"num_clusters: must be even and >= 4, got {self.num_clusters}")
        check_parameterization(self.parameterization)
        if self.input_scaling not in INPUT_SCALINGS:
            raise ConfigError(f"input_scaling: unknown {self.input_scaling!r}; choose from "
                              f"{', '.join(INPUT_SCALINGS)}")
        lr = self.learning_rate
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr: must be a finite number > 0, got {self.lr!r}")
        return self

    def validate_flags(self) -> "GMConfig":
        """``validate`` for scripts: the error names the flag (``--d-input``), not the field."""
        try:
            return self.validate()
        except ConfigError as e:
            name, rest = str(e).split(":", 1)
            raise ConfigError(f"--{name.replace('_', '-')}:{rest}") from None
