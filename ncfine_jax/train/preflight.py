"""One check of a training run against its data and devices, before anything is written.

Both the experiment layer (``experiment.run``, ``experiment.grid``: errors worded with the
command-line flags) and the engine (``build_engine``, ``train_stack``: errors worded with
the config fields) call ``preflight``, so each case has one behaviour everywhere.
"""

from __future__ import annotations

import dataclasses

from ncfine_jax.train.config import FieldError, TrainConfig


def preflight(config: TrainConfig, n_train: int, is_image: bool, data_devices: int
              ) -> TrainConfig:
    """The config as it will train, once checked against the data and the device layout.

    Args:
      config: a validated ``TrainConfig``.
      n_train: training samples.
      is_image: whether the data are images [n, h, w, c] (else feature vectors [n, d]).
      data_devices: devices of the mesh's "data" axis (each batch is split over them).

    Returns:
      ``config``, with ``augment`` off for feature vectors: crop + flip are defined on
      images only, so a run on vectors trains (and records) no augmentation.

    Raises:
      FieldError: a batch larger than the training set, or a batch size the data devices
        do not divide (the field names the setting; front ends re-word it with a flag).
    """
    if config.batch_size > n_train:
        raise FieldError("train config", "batch_size", config.batch_size,
                         f"exceeds the {n_train} training samples")
    for field in ("batch_size", "eval_batch_size"):
        size = getattr(config, field)
        if size % data_devices:
            raise FieldError("train config", field, size, f"must be divisible by the "
                             f"{data_devices} devices of the data axis")
    if config.augment and not is_image:
        config = dataclasses.replace(config, augment=False)
    return config
