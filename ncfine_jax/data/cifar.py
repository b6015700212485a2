"""CIFAR-10 / CIFAR-100 from the official archives, in both official formats.

* "python": pickled batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
  ``batches.meta``; ``cifar-100-python/train``, ``test``, ``meta``), each a dict with
  ``data`` uint8 [n, 3072] (channel-major: 1024 R, 1024 G, 1024 B, rows top to bottom)
  and ``labels`` (CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100).
* "binary": fixed-length records (``cifar-10-batches-bin/data_batch_1..5.bin``,
  ``test_batch.bin``: 1 label byte + 3072 pixel bytes; ``cifar-100-binary/train.bin``,
  ``test.bin``: coarse byte + fine byte + 3072 pixel bytes).

Either as the .tar.gz or as the extracted directory. Layout reference:
https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky, 2009).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from pathlib import Path

import numpy as np

from ncfine_jax.data.archive import Contents
from ncfine_jax.errors import DataError
from ncfine_jax.labels import CIFAR10_CLASS_NAMES, CIFAR100_CLASS_NAMES, CIFAR100_SUPERCLASS_NAMES

BASE_URL = "https://www.cs.toronto.edu/~kriz/"
HOME_PAGE = BASE_URL + "cifar.html"  # where a user downloads the archives by hand


@dataclasses.dataclass(frozen=True)
class CifarFormat:
    """One official CIFAR release: where it lives and which members it holds."""

    dataset: str  # "cifar10" | "cifar100"
    fmt: str  # "python" | "binary"
    archive: str  # official archive file name
    folder: str  # top folder inside the archive
    md5: str  # official md5 of the archive (cifar.html)
    train: tuple[str, ...]
    test: str
    meta: tuple[str, ...]  # optional members holding class names

    @property
    def url(self) -> str:
        return BASE_URL + self.archive

    @property
    def members(self) -> tuple[str, ...]:
        return self.train + (self.test,) + self.meta


FORMATS: tuple[CifarFormat, ...] = (
    CifarFormat("cifar10", "python", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                "c58f30108f718f92721af3b95e74349a",
                tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", ("batches.meta",)),
    CifarFormat("cifar10", "binary", "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                "c32a1d4ab5d03f1284b67883e8d87530",
                tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin",
                ("batches.meta.txt",)),
    CifarFormat("cifar100", "python", "cifar-100-python.tar.gz", "cifar-100-python",
                "eb9058c3a382ffc7106e4002c42a8d85", ("train",), "test", ("meta",)),
    CifarFormat("cifar100", "binary", "cifar-100-binary.tar.gz", "cifar-100-binary",
                "03b5dce01913d631647c71ecec9e9cb8", ("train.bin",), "test.bin",
                ("fine_label_names.txt", "coarse_label_names.txt")),
)

MEMBER_NAMES = frozenset(m for f in FORMATS for m in f.members)


def formats_of(dataset: str) -> list[CifarFormat]:
    return [f for f in FORMATS if f.dataset == dataset]


def is_cifar_member(path: str) -> bool:
    """Whether ``path`` (inside an archive or directory) may be an official CIFAR file."""
    parts = path.split("/")
    # Official files sit at most one folder deep; "train"/"test" deeper down are folders
    # of a class-folder set, not CIFAR-100 batches.
    return parts[-1] in MEMBER_NAMES and len(parts) <= 2


def detect(contents: Contents, source: str) -> CifarFormat | None:
    """The official format whose train and test members are all present, else None."""
    names = {p.rsplit("/", 1)[-1] for p in contents.files if is_cifar_member(p)}
    for f in FORMATS:
        if set(f.train) | {f.test} <= names:
            return f
    # Partial CIFAR content (some batches present): name what is missing. CIFAR-100's
    # python names ("train", "test") are generic, so they count only next to its "meta".
    for f in FORMATS:
        required = set(f.train) | {f.test}
        distinctive = f.dataset == "cifar10" or f.fmt == "binary" or "meta" in names
        if names & required and distinctive:
            raise DataError(
                f"{source}: looks like {f.archive} but members {sorted(required - names)} "
                "are missing"
            )
    return None


def decode(contents: Contents, f: CifarFormat, source: str) -> dict[str, np.ndarray | list]:
    """Decode the official members in ``contents`` into arrays.

    Returns:
      dict with ``x_train`` uint8 [n, 32, 32, 3], ``y_train`` int32 [n], ``x_test``,
      ``y_test``, ``class_names``, and for CIFAR-100 ``y_train_coarse``, ``y_test_coarse``,
      ``coarse_class_names``.
    """
    by_name = {p.rsplit("/", 1)[-1]: data for p, data in contents.files.items()
               if is_cifar_member(p)}
    what = f"{f.dataset} ({f.fmt} format) {source}"
    parse = _parse_python if f.fmt == "python" else _parse_binary
    train = [parse(by_name[m], f, f"{what}: member {m}") for m in f.train]
    test = parse(by_name[f.test], f, f"{what}: member {f.test}")
    out: dict = {
        "x_train": np.concatenate([t[0] for t in train]),
        "y_train": np.concatenate([t[1] for t in train]),
        "x_test": test[0],
        "y_test": test[1],
    }
    if f.dataset == "cifar100":
        out["y_train_coarse"] = np.concatenate([t[2] for t in train])
        out["y_test_coarse"] = test[2]
    out.update(_class_names(by_name, f, what))
    return out


def _images(flat: np.ndarray) -> np.ndarray:
    # Rows are channel-major (3 planes of 32x32); models want NHWC.
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _parse_binary(raw: bytes, f: CifarFormat, what: str):
    label_bytes = 1 if f.dataset == "cifar10" else 2
    row = 3072 + label_bytes
    if len(raw) == 0 or len(raw) % row:
        raise DataError(f"{what}: size {len(raw)} bytes is not a multiple of the "
                        f"{row}-byte record (truncated or corrupt)")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, row)
    x = _images(rows[:, label_bytes:])
    if f.dataset == "cifar10":
        y = _check(rows[:, 0], 10, what, "label")
        return x, y
    coarse = _check(rows[:, 0], 20, what, "coarse label")
    fine = _check(rows[:, 1], 100, what, "fine label")
    return x, fine, coarse


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays and builtins.

    Pickles can run arbitrary code; the official batches need nothing beyond ndarray
    reconstruction, so everything else is refused.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # numpy 2 name; avoids a deprecation warning
        return super().find_class(module, name)


def _unpickle(raw: bytes, what: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad member
        raise DataError(f"{what}: cannot be unpickled ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{what}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _parse_python(raw: bytes, f: CifarFormat, what: str):
    d = _unpickle(raw, what)
    if f.dataset == "cifar10":
        keys = ("data", "labels")
    else:
        keys = ("data", "fine_labels", "coarse_labels")
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(f"{what}: keys {missing} are missing")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{what}: data has shape {data.shape} dtype {data.dtype}, "
                        "expected uint8 [n, 3072]")
    x = _images(data)
    labels = [np.asarray(d[k]) for k in keys[1:]]
    for k, y in zip(keys[1:], labels):
        if y.shape != (len(x),):
            raise DataError(f"{what}: {k} has shape {y.shape}, expected ({len(x)},)")
    if f.dataset == "cifar10":
        return x, _check(labels[0], 10, what, "label")
    fine = _check(labels[0], 100, what, "fine label")
    return x, fine, _check(labels[1], 20, what, "coarse label")


def _check(y: np.ndarray, n: int, what: str, kind: str) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= n)):
        raise DataError(f"{what}: {kind}s must be integers in [0, {n})")
    return y.astype(np.int32)


def _class_names(by_name: dict[str, bytes], f: CifarFormat, what: str) -> dict:
    """Class names from the meta members when present, else the official lists."""
    if f.dataset == "cifar10":
        fine, coarse = list(CIFAR10_CLASS_NAMES), None
    else:
        fine, coarse = list(CIFAR100_CLASS_NAMES), list(CIFAR100_SUPERCLASS_NAMES)
    if f.fmt == "python" and f.meta[0] in by_name:
        meta = _unpickle(by_name[f.meta[0]], f"{what}: member {f.meta[0]}")
        key = "label_names" if f.dataset == "cifar10" else "fine_label_names"
        fine = _names(meta.get(key), fine)
        if coarse is not None:
            coarse = _names(meta.get("coarse_label_names"), coarse)
    elif f.fmt == "binary":
        if f.meta[0] in by_name:
            fine = _names(by_name[f.meta[0]].decode("latin1").split(), fine)
        if coarse is not None and f.meta[1] in by_name:
            coarse = _names(by_name[f.meta[1]].decode("latin1").split(), coarse)
    out = {"class_names": fine}
    if coarse is not None:
        out["coarse_class_names"] = coarse
    return out


def _names(found, default: list[str]) -> list[str]:
    if not found or len(found) != len(default):
        return default
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in found]


def find_local(dataset: str, search_dirs: list[Path]) -> tuple[Path | None, list[str]]:
    """First official archive or extracted folder of ``dataset`` in ``search_dirs``.

    Returns:
      (path or None, list of the places tried, for the error message).
    """
    tried = []
    for d in search_dirs:
        if not d.is_dir():
            tried.append(f"{d} (no such directory)")
            continue
        for f in formats_of(dataset):
            for candidate in (d / f.archive, d / f.folder):
                tried.append(str(candidate))
                if candidate.exists():
                    return candidate, tried
    return None, tried
