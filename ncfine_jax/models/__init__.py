"""Backbones and their registry.

Every model is a ``flax.linen.Module`` called as::

    logits, features = model.apply(variables, x, train=train, mutable=["batch_stats"])

(``mutable`` only when ``train=True`` and the model has BatchNorm), with ``x`` float
[b, 32, 32, 3] NHWC images (already normalised) or [b, d] vectors (MLP; the MLP flattens
images). ``logits`` [b, C] and ``features`` [b, d_feat] (the penultimate representation:
after the last ReLU / global pool, before the Dense named ``classifier``) are float32
whatever the compute dtype. BatchNorm uses PyTorch's momentum 0.9 / eps 1e-5 and keeps
its statistics in collection ``batch_stats``.

The backbones and their properties are listed once, in ``registry.BACKBONES``. Common
kwargs: ``width`` (base channels / growth rate / hidden units; small values give tiny test
models) and ``dtype`` (compute dtype; parameters always float32).
"""

from ncfine_jax.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "registry": ["BACKBONES", "Backbone"],
    "build": ["get_model", "param_count"],
    "densenet": ["DenseNet"], "mlp": ["MLP"], "resnet": ["ResNet"], "vgg": ["VGG"],
})
