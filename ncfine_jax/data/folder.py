"""Class-folder image sets: ``split/class/*.png|jpg`` in a directory or a .tar(.gz).

``split`` is ``train`` or ``test`` (optionally below one common top folder). Images must be
32x32 RGB (grayscale and palette images are converted to RGB). Class order is the sorted
folder names, unless the names are exactly CIFAR-10's or CIFAR-100's classes, in which case
the official label order is used (and CIFAR-100 also gets its official superclasses).
"""

from __future__ import annotations

import io

import numpy as np

from ncfine_jax.data.archive import Contents, is_image_name
from ncfine_jax.errors import DataError
from ncfine_jax.labels import (
    CIFAR10_CLASS_NAMES,
    CIFAR100_CLASS_NAMES,
    CIFAR100_SUPERCLASS,
    CIFAR100_SUPERCLASS_NAMES,
)

SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)
KNOWN_CLASS_LISTS = (CIFAR10_CLASS_NAMES, CIFAR100_CLASS_NAMES)


def keep(path: str) -> bool:
    """Files a class-folder set needs: images at ``[.../]split/class/file``."""
    parts = path.split("/")
    return len(parts) >= 3 and parts[-3] in SPLITS and is_image_name(path)


def looks_like_folder_set(contents: Contents) -> bool:
    return any(keep(p) for p in contents.files) or any(
        d.rsplit("/", 1)[-1] in SPLITS for d in contents.dirs
    )


def class_order(names: set[str]) -> list[str]:
    """Official order when ``names`` is a known dataset's class list, else sorted."""
    for known in KNOWN_CLASS_LISTS:
        if names == set(known):
            return list(known)
    return sorted(names)


def decode(contents: Contents, source: str) -> dict:
    """Decode a class-folder set.

    Args:
      contents: the image files (from ``archive.read_tar`` / ``read_dir`` with ``keep``)
        and the directories seen.
      source: path shown in error messages.

    Returns:
      dict with ``x_train`` uint8 [n, 32, 32, 3], ``y_train`` int32 [n], ``x_test``,
      ``y_test``, ``class_names`` (and CIFAR-100 superclass labels when the classes are
      CIFAR-100's). Samples are ordered by class, then file name.

    Raises:
      DataError: no train or test split, a class folder without images, test classes
        missing from train, an image that cannot be decoded or is not 32x32x3.
    """
    # (split, class) -> sorted file paths
    groups: dict[tuple[str, str], list[str]] = {}
    prefixes = set()
    for path in contents.files:
        if keep(path):
            parts = path.split("/")
            prefixes.add("/".join(parts[:-3]))
            groups.setdefault((parts[-3], parts[-2]), []).append(path)
    for d in contents.dirs:  # class folders that hold no image at all
        parts = d.split("/")
        if len(parts) >= 2 and parts[-2] in SPLITS:
            prefix = "/".join(parts[:-2])
            if not prefixes or prefix in prefixes:
                groups.setdefault((parts[-2], parts[-1]), [])
    if len(prefixes) > 1:
        raise DataError(f"{source}: several dataset roots inside ({sorted(prefixes)})")
    for (split, cls), paths in sorted(groups.items()):
        if not paths:
            raise DataError(f"{source}: class folder {split}/{cls} has no .png/.jpg images")
    classes = {split: {c for s, c in groups if s == split} for split in SPLITS}
    for split in SPLITS:
        if not classes[split]:
            raise DataError(f"{source}: no {split}/<class>/*.png|jpg images found")
    extra = classes["test"] - classes["train"]
    if extra:
        raise DataError(f"{source}: test classes {sorted(extra)} have no train folder")
    class_names = class_order(classes["train"])
    index = {c: i for i, c in enumerate(class_names)}

    out: dict = {"class_names": class_names}
    for split in SPLITS:
        paths, labels = [], []
        for cls in class_names:
            members = sorted(groups.get((split, cls), []))
            paths.extend(members)
            labels.extend([index[cls]] * len(members))
        x = np.empty((len(paths),) + IMAGE_SHAPE, dtype=np.uint8)
        for i, p in enumerate(paths):
            x[i] = _decode_image(contents.files[p], p, source)
        out[f"x_{split}"] = x
        out[f"y_{split}"] = np.asarray(labels, dtype=np.int32)
    if class_names == list(CIFAR100_CLASS_NAMES):
        out["y_train_coarse"] = CIFAR100_SUPERCLASS[out["y_train"]]
        out["y_test_coarse"] = CIFAR100_SUPERCLASS[out["y_test"]]
        out["coarse_class_names"] = list(CIFAR100_SUPERCLASS_NAMES)
    return out


def _decode_image(data: bytes, path: str, source: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode in ("L", "P"):
                im = im.convert("RGB")  # exact: gray and palette pixels are RGB values
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{source}: image {path} cannot be decoded ({e})") from None
    if arr.shape != IMAGE_SHAPE or arr.dtype != np.uint8:
        shape = "x".join(map(str, arr.shape))
        raise DataError(
            f"{source}: image {path} has shape {shape} ({arr.dtype}), expected 32x32x3 uint8"
        )
    return arr
