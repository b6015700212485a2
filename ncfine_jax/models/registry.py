"""Which backbones exist and what they are, without importing any of them.

``BACKBONES`` is the one list of backbones: each entry names the function that builds it
(imported when a model is built, so reading the registry costs nothing: flag parsing and
``--help`` use it), the input it takes, its default width and its feature dimension as a
function of the width. ``--arch`` takes its choices and help from here, the run layer its
input check, the tests their parametrisation. Adding a backbone is one model file and one
entry below.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Backbone:
    """One registered backbone.

    Attributes:
      name: the ``--arch`` value, e.g. "resnet18".
      builder: "module:function" of ``function(num_classes, width=None, dtype=...,
        **options) -> flax.linen.Module``.
      description: what it is, in a few words.
      width_meaning: what ``--width`` sets in it.
      default_width: the width the paper's network has (``width=None``).
      feature_dim: ``feature_dim(width) -> d``, the length of the penultimate features.
      takes_vectors: also trains on feature vectors [n, d] (every backbone takes images
        [n, 32, 32, 3]).
    """

    name: str
    builder: str
    description: str
    width_meaning: str
    default_width: int
    feature_dim: Callable[[int], int]
    takes_vectors: bool = False

    def build_function(self) -> Callable[..., Any]:
        """The builder function (imports the model's module)."""
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)

    def features(self, width: int | None = None) -> int:
        """Feature dimension at ``width`` (None: the default width)."""
        return self.feature_dim(self.default_width if width is None else width)


def _densenet_features(growth: int, blocks=(6, 12, 24, 16), reduction: float = 0.5) -> int:
    """Channels after the last dense block: a 2k stem, each layer adds k, each transition
    keeps ``reduction`` of them (``models.densenet.DenseNet``)."""
    channels = 2 * growth
    for i, layers in enumerate(blocks):
        channels += layers * growth
        if i < len(blocks) - 1:
            channels = int(math.floor(channels * reduction))
    return channels


def _eight_times(width: int) -> int:
    return 8 * width


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("resnet18", "ncfine_jax.models.resnet:resnet18",
             "ResNet-18 for CIFAR (3x3 stem, no max-pool)", "stem channels", 64, _eight_times),
    Backbone("densenet121", "ncfine_jax.models.densenet:densenet121",
             "DenseNet-121 for CIFAR", "growth rate", 32, _densenet_features),
    *(Backbone(f"vgg{depth}", f"ncfine_jax.models.vgg:vgg{depth}",
               f"VGG-{depth} with BatchNorm", "first-stage channels", 64, _eight_times)
      for depth in (11, 13, 16, 19)),
    Backbone("mlp", "ncfine_jax.models.mlp:mlp", "MLP of ReLU layers (flattens images)",
             "hidden units", 512, lambda width: width, takes_vectors=True),
)}


def width_help() -> str:
    """The ``--width`` help: what the width is in each backbone, and its default."""
    groups: dict[tuple[str, int], list[str]] = {}
    for b in BACKBONES.values():
        groups.setdefault((b.width_meaning, b.default_width), []).append(b.name)
    return "base width, small for quick runs; " + "; ".join(
        f"{'/'.join(names)}: {meaning}, paper {width}"
        for (meaning, width), names in groups.items())
