"""Feature files in, checked arrays out: the input boundary of the analysis.

A *feature set* is one epoch (or checkpoint) of one network: a dict with
``train_features [n, d]``, ``train_classes [n]`` (original class per sample),
``train_labels [n]`` (training label; derived from the label mapping when that is a
coarsening and the key is absent), optionally ``test_features [m, d]``,
``test_labels [m]``, ``test_classes [m]``, ``classifier_kernel [d, L]`` and
``classifier_bias [L]`` (the last layer, for NC3/NC4) and ``epoch`` (scalar).

Files (``open_feature_sources``):
  * ``.npz``: one feature set per file. Members stored uncompressed (``np.savez``, what
    the training engine writes) are memory-mapped, so only what is read is in memory;
    members of ``np.savez_compressed`` files cannot be mapped and are read whole.
  * ``.npy``: one array per file, memory-mapped (``np.load(mmap_mode="r")``), named
    ``<prefix><key>.npy`` (``train_features.npy``, ``epoch10_train_features.npy``, ...);
    the files sharing a prefix form one feature set.
  * a folder: its ``*.npz`` files, or its ``*.npy`` files grouped by prefix, each group
    one feature set, in natural name order (``epoch_2`` before ``epoch_10``).

Every check raises a one-line :class:`~ncfine_jax.errors.DataError` naming the file (or
``where``) and the problem, before anything is computed or written.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ncfine_jax.errors import ConfigError, DataError
from ncfine_jax.labels import LabelMapping, count_ids
from ncfine_jax.text import squashed

SPLIT_KEYS = ("features", "labels", "classes")
FEATURE_KEYS = tuple(f"{s}_{k}" for s in ("train", "test") for k in SPLIT_KEYS)
CLASSIFIER_KEYS = ("classifier_kernel", "classifier_bias")
ALL_KEYS = FEATURE_KEYS + CLASSIFIER_KEYS + ("epoch",)
# What reading a truncated or corrupt .npz raises (BadZipFile and EOFError are neither
# OSError nor ValueError; struct.error comes from a cut local header).
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, struct.error)
# Rows per chunk for the NaN/inf scan of (possibly memory-mapped) features.
_SCAN_ROWS = 1 << 14


# ----------------------------------------------------------------------------- files


def _stored_member(f, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """Memory map of one uncompressed ``.npy`` member of a zip file."""
    # A zip local file header is 30 fixed bytes, then the name and an extra field whose
    # lengths sit at bytes 26-29; the member's bytes (here a whole .npy file) follow.
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    f.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise ValueError(f"member {info.filename} holds Python objects")
    order = "F" if fortran else "C"
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype, order=order)
    return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape, order=order)


def read_npz(path: str | os.PathLike, what: str = "features") -> dict[str, np.ndarray]:
    """Arrays of an ``.npz``: stored members memory-mapped, compressed members read whole.

    Raises:
        DataError: ``"{what} {path}: unreadable (...)"`` for a missing, truncated or
            corrupt file.
    """
    path = Path(path)
    try:
        out: dict[str, np.ndarray] = {}
        compressed = []
        with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                if info.compress_type == zipfile.ZIP_STORED:
                    out[key] = _stored_member(f, info, path)
                else:
                    compressed.append(key)
        if compressed:
            with np.load(path, allow_pickle=False) as z:
                out.update({k: z[k] for k in compressed})
        return out
    except NPZ_ERRORS as e:
        raise DataError(f"{what} {path}: unreadable ({squashed(e)})") from None


def read_npy(path: str | os.PathLike, what: str = "features") -> np.ndarray:
    """One ``.npy`` array, memory-mapped; DataError when unreadable."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except NPZ_ERRORS as e:
        raise DataError(f"{what} {path}: unreadable ({squashed(e)})") from None


@dataclasses.dataclass(frozen=True)
class FeatureSource:
    """One feature set on disk, opened on demand.

    Attributes:
        name: how figures and results.json name it (a path, or ``dir/prefix*.npy``).
        paths: key -> .npy path (an .npy group), or None for an .npz file.
        npz: the .npz path, or None.
    """

    name: str
    npz: Path | None = None
    paths: Mapping[str, Path] | None = None

    def open(self) -> dict[str, np.ndarray]:
        """The arrays, memory-mapped where the format allows."""
        if self.npz is not None:
            return read_npz(self.npz)
        return {k: read_npy(p) for k, p in self.paths.items()}

    def stored_epoch(self) -> int | None:
        """The ``epoch`` scalar stored with the arrays, if any."""
        if self.npz is not None:  # read only the member asked for
            try:
                with np.load(self.npz, allow_pickle=False) as z:
                    epoch = z["epoch"] if "epoch" in z.files else None
            except NPZ_ERRORS as e:
                raise DataError(f"features {self.npz}: unreadable ({squashed(e)})") from None
        else:
            epoch = read_npy(self.paths["epoch"]) if "epoch" in self.paths else None
        if epoch is None or np.size(epoch) != 1 or not np.issubdtype(np.asarray(epoch).dtype, np.integer):
            return None
        return int(np.asarray(epoch).reshape(()))


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _npy_key(path: Path) -> tuple[str, str] | None:
    """(prefix, key) of ``<prefix><key>.npy``, or None when the name ends in no known key."""
    for key in ALL_KEYS:
        suffix = f"{key}.npy"
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)], key
    return None


def _npy_groups(files: Sequence[Path], sort: bool) -> list[FeatureSource]:
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    for p in files:
        parsed = _npy_key(p)
        if parsed is None:
            raise DataError(f"features {p}: not named <prefix><key>.npy with key one of {', '.join(ALL_KEYS)}")
        prefix, key = parsed
        group = groups.setdefault((p.parent, prefix), {})
        if key in group:
            raise DataError(f"features {p}: {key} given twice (also {group[key]})")
        group[key] = p
    keys = sorted(groups, key=lambda g: (str(g[0]), _natural_key(g[1]))) if sort else list(groups)
    return [FeatureSource(name=str(parent / f"{prefix}*.npy"), paths=groups[(parent, prefix)])
            for parent, prefix in keys]


def open_feature_sources(inputs: Sequence[str | os.PathLike]) -> list[FeatureSource]:
    """Feature sets named on a command line: .npz files, .npy files, folders of either.

    Explicit files keep the order given; a folder's contents are taken in natural name
    order. Raises DataError for a missing path, an unknown extension, or a folder with
    no feature files (or with both .npz and .npy files).
    """
    if not inputs:
        raise ConfigError("FEATURES: give at least one .npz/.npy file or folder")
    sources: list[FeatureSource] = []
    loose_npy: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            npz = sorted(p.glob("*.npz"), key=lambda q: _natural_key(q.name))
            npy = sorted(p.glob("*.npy"), key=lambda q: _natural_key(q.name))
            if npz and npy:
                raise DataError(f"features {p}: holds both .npz and .npy files; give one kind")
            if not npz and not npy:
                raise DataError(f"features {p}: folder holds no .npz or .npy files")
            sources += [FeatureSource(name=str(q), npz=q) for q in npz]
            sources += _npy_groups(npy, sort=True)
        elif not p.exists():
            raise DataError(f"features {p}: not found")
        elif p.suffix == ".npz":
            sources.append(FeatureSource(name=str(p), npz=p))
        elif p.suffix == ".npy":
            loose_npy.append(p)
        else:
            raise DataError(f"features {p}: expected an .npz or .npy file or a folder")
    sources += _npy_groups(loose_npy, sort=False)
    return sources


# ----------------------------------------------------------------------------- checks


def _int_array(x: Any, name: str, n: int, where: str) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != (n,):
        raise DataError(f"{where}: {name} has shape {a.shape}, expected [{n}] (one per row of the features)")
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{where}: {name} has dtype {a.dtype}, expected integers")
    return a.astype(np.int64)


def check_finite(features: Any, name: str, where: str) -> None:
    """DataError naming the first row with NaN/inf; reads ``features`` in row chunks."""
    for lo in range(0, features.shape[0], _SCAN_ROWS):
        bad = ~np.isfinite(np.asarray(features[lo : lo + _SCAN_ROWS])).all(axis=1)
        if bad.any():
            raise DataError(f"{where}: {name} has NaN or inf, e.g. in row {lo + int(np.argmax(bad))}")


def _features(arrays: Mapping[str, Any], name: str, where: str) -> Any:
    f = arrays[name]
    if not hasattr(f, "shape") or not hasattr(f, "dtype"):
        f = np.asarray(f)
    if len(f.shape) != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise DataError(f"{where}: {name} has shape {tuple(f.shape)}, expected a non-empty [n, d] array")
    if not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
        raise DataError(f"{where}: {name} has dtype {f.dtype}, expected real numbers")
    return f


def _label_table(mapping) -> np.ndarray:
    """[L, C] bool: which classes each training label holds."""
    table = np.zeros((mapping.num_labels, mapping.num_classes), bool)
    for label, classes in enumerate(mapping.classes_of_label):
        table[label, list(classes)] = True
    return table


def _check_split(arrays: dict, split: str, mapping, where: str) -> None:
    """Ranges and agreement with ``mapping`` of one split's labels and classes."""
    y, c = arrays[f"{split}_labels"], arrays[f"{split}_classes"]
    for name, v, hi in ((f"{split}_classes", c, mapping.num_classes), (f"{split}_labels", y, mapping.num_labels)):
        bad = (v < 0) | (v >= hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: {name} holds values outside [0, {hi}) of the label mapping, "
                            f"e.g. {int(v[i])} in row {i}")
    wrong = ~_label_table(mapping)[y, c]
    if wrong.any():
        i = int(np.argmax(wrong))
        raise DataError(
            f"{where}: {int(wrong.sum())} {split} sample(s) carry a label that contradicts the label "
            f"mapping, e.g. row {i}: label {int(y[i])} with class {int(c[i])} (label {int(y[i])} "
            f"holds classes {list(mapping.classes_of_label[int(y[i])])})")


def _missing(counts: np.ndarray) -> str:
    empty = np.flatnonzero(counts == 0)
    return ", ".join(str(int(k)) for k in empty[:10]) + (", ..." if empty.size > 10 else "")


def check_feature_set(arrays: Mapping[str, Any], mapping, where: str) -> dict[str, Any]:
    """Checked, normalised copy of one feature set (features stay memory-mapped).

    Labels absent from ``arrays`` are derived from ``mapping`` when it is a coarsening
    (label = the label holding the class). Checks: required keys, shapes, integer
    labels in range and consistent with ``mapping``, finite features and classifier,
    every class and label present in the training split and every class in the test
    split (CLP and LPO are measured per original class; a test set lacking one would
    give a meaningless number).

    Returns:
        dict with the six split keys (``test_*`` None when absent) and
        ``classifier_kernel`` / ``classifier_bias`` (None when absent).
    """
    present = [k for k in FEATURE_KEYS if k in arrays]
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        keys = [f"{split}_{k}" for k in SPLIT_KEYS]
        if split == "test" and not any(k in arrays for k in keys):
            out.update(dict.fromkeys(keys))
            continue
        for k in (keys[0], keys[2]):
            if k not in arrays:
                raise DataError(f"{where}: missing array {k} (has {', '.join(present) or 'none of the feature keys'})")
        f = _features(arrays, keys[0], where)
        out[keys[0]] = f
        out[keys[2]] = _int_array(arrays[keys[2]], keys[2], f.shape[0], where)
        if keys[1] in arrays:
            out[keys[1]] = _int_array(arrays[keys[1]], keys[1], f.shape[0], where)
        elif mapping.is_coarsening:
            c = out[keys[2]]
            if (c >= 0).all() and (c < mapping.num_classes).all():
                out[keys[1]] = mapping.label_of_class[c].astype(np.int64)
            else:
                out[keys[1]] = np.full_like(c, -1)  # reported by _check_split below
        else:
            raise DataError(f"{where}: missing array {keys[1]}; it can only be derived from a label "
                            "mapping where every class has one label (num_coarse, or a coarsening)")
        _check_split(out, split, mapping, where)
    train_d = out["train_features"].shape[1]
    if out["test_features"] is not None and out["test_features"].shape[1] != train_d:
        raise DataError(f"{where}: test_features have dimension {out['test_features'].shape[1]}, "
                        f"train_features {train_d}")

    counts = np.bincount(out["train_classes"], minlength=mapping.num_classes)
    if (counts == 0).any():
        raise DataError(f"{where}: classes {_missing(counts)} have no training samples; "
                        "the metrics need every class")
    counts = np.bincount(out["train_labels"], minlength=mapping.num_labels)
    if (counts == 0).any():
        raise DataError(f"{where}: training labels {_missing(counts)} have no training samples")
    if out["test_classes"] is not None:
        counts = np.bincount(out["test_classes"], minlength=mapping.num_classes)
        if (counts == 0).any():
            m = out["test_classes"].size
            raise DataError(f"{where}: {m} test sample(s) for {mapping.num_classes} classes, none of class(es) "
                            f"{_missing(counts)}; CLP and LPO need every class in the test set")

    kernel, bias = arrays.get("classifier_kernel"), arrays.get("classifier_bias")
    if kernel is None and bias is not None:
        raise DataError(f"{where}: classifier_bias given without classifier_kernel")
    if kernel is not None:
        kernel = np.asarray(kernel)
        if kernel.shape != (train_d, mapping.num_labels):
            raise DataError(f"{where}: classifier_kernel has shape {kernel.shape}, expected "
                            f"[{train_d}, {mapping.num_labels}] (features x training labels)")
        if bias is not None:
            bias = np.asarray(bias)
            if bias.shape != (mapping.num_labels,):
                raise DataError(f"{where}: classifier_bias has shape {bias.shape}, expected [{mapping.num_labels}]")
        for name, v in (("classifier_kernel", kernel), ("classifier_bias", bias)):
            if v is not None and not np.isfinite(v).all():
                raise DataError(f"{where}: {name} has NaN or inf")
    out["classifier_kernel"], out["classifier_bias"] = kernel, bias
    for split in ("train", "test"):
        if out[f"{split}_features"] is not None:
            check_finite(out[f"{split}_features"], f"{split}_features", where)
    return out


# ----------------------------------------------------------------------------- label mapping


def infer_label_mapping(train_labels: Any, train_classes: Any, num_classes: int | None = None,
                        where: str = "features"):
    """The :class:`~ncfine_jax.labels.LabelMapping` the samples' (label, class) pairs imply.

    Every label holding several classes and every class in one label: a coarsening
    (kind "coarse" when label = class mod L, else "random_coarse" with no seed). Every
    label holding one class: "original" (one label per class) or "fine" (a class
    split over several labels). Anything else is a DataError.
    """
    y = _int_array(train_labels, "train_labels", np.shape(train_labels)[0], where)
    c = _int_array(train_classes, "train_classes", y.size, where)
    for name, v in (("train_labels", y), ("train_classes", c)):
        if v.size == 0 or v.min() < 0:
            raise DataError(f"{where}: {name} must be non-empty and >= 0")
    num_labels = count_ids(y, f"{where}: train_labels", "label")
    num_classes = (count_ids(c, f"{where}: train_classes") if num_classes is None
                   else int(num_classes))
    if c.max() >= num_classes:
        raise DataError(f"{where}: train_classes holds {int(c.max())}, beyond the {num_classes} class names")
    pairs = np.unique(y * num_classes + c)
    groups = [[] for _ in range(num_labels)]
    for p in pairs:
        groups[int(p // num_classes)].append(int(p % num_classes))
    empty = [label for label, g in enumerate(groups) if not g]
    if empty:
        raise DataError(f"{where}: training labels {empty[:10]} have no training samples")
    labels_per_class = np.bincount(pairs % num_classes, minlength=num_classes)
    if (labels_per_class == 0).any():
        raise DataError(f"{where}: classes {_missing(labels_per_class)} have no training samples")
    if (labels_per_class == 1).all():
        if num_labels == num_classes:
            kind = "original"
        else:
            mod = all(k % num_labels == label for label, g in enumerate(groups) for k in g)
            kind = "coarse" if mod and num_classes % num_labels == 0 else "random_coarse"
        return LabelMapping(kind, num_classes, num_labels, tuple(map(tuple, groups)), seed=None,
                            num_coarse=None if kind == "original" else num_labels)
    if all(len(g) == 1 for g in groups):
        return LabelMapping("fine", num_classes, num_labels, tuple(map(tuple, groups)), seed=None)
    raise DataError(f"{where}: train_labels/train_classes are neither a coarsening (each class in one "
                    "label) nor a refinement (each label one class); give a label mapping")


def resolve_label_mapping(arrays: Mapping[str, Any], mapping=None, num_coarse: int | None = None,
                          num_classes: int | None = None, where: str = "features"):
    """The mapping to analyse with: ``mapping``, else ``num_coarse`` (class mod C~), else inferred.

    Args:
        arrays: the first feature set (only its training labels/classes are read).
        mapping: a LabelMapping (or a path to its JSON).
        num_coarse: C~, for labels = class mod C~.
        num_classes: C when known (e.g. from class names); else max class + 1.
        where: how errors name the input.
    """
    if mapping is not None and num_coarse is not None:
        raise ConfigError("mapping and num_coarse: give one, not both")
    if isinstance(mapping, (str, os.PathLike)):
        mapping = LabelMapping.load(mapping)
    if mapping is not None:
        if num_classes is not None and num_classes != mapping.num_classes:
            raise ConfigError(f"class_names: {num_classes} names for the label mapping's "
                              f"{mapping.num_classes} classes")
        return mapping
    if "train_classes" not in arrays:
        raise DataError(f"{where}: missing array train_classes")
    if num_coarse is not None:
        c = _int_array(arrays["train_classes"], "train_classes", np.shape(arrays["train_classes"])[0], where)
        counted = num_classes is None
        if counted:
            num_classes = count_ids(c, f"{where}: train_classes")
        if isinstance(num_coarse, bool) or not isinstance(num_coarse, (int, np.integer)) or num_coarse < 2:
            raise ConfigError(f"num_coarse: expected an int >= 2, got {num_coarse!r}")
        if num_classes % num_coarse:
            raise ConfigError(f"num_coarse {num_coarse}: does not divide the {num_classes} classes "
                              f"({'distinct train_classes' if counted else 'class names'})")
        return LabelMapping.for_kind("coarse", num_classes, num_coarse=int(num_coarse))
    if "train_labels" not in arrays:
        raise DataError(f"{where}: missing array train_labels (or give num_coarse or a label mapping)")
    if "train_features" in arrays:  # lengths are checked against the features' rows
        n = np.shape(arrays["train_features"])[0]
        for k in ("train_labels", "train_classes"):
            _int_array(arrays[k], k, n, where)
    return infer_label_mapping(arrays["train_labels"], arrays["train_classes"], num_classes, where)


def load_feature_set(source: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | FeatureSource) -> Mapping[str, Any]:
    """The arrays of one feature set given as a dict, a zero-argument loader or a FeatureSource."""
    if isinstance(source, FeatureSource):
        return source.open()
    if callable(source):
        return source()
    return source
