"""``load_dataset``: one entry point for named datasets and dataset paths."""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ncfine_jax.data import archive, cifar, folder, sources
from ncfine_jax.data.cache import (
    DATA_ENV,
    cache_file,
    cache_root,
    download as download_file,
    file_fingerprint,
    load_cached,
    save_cached,
)
from ncfine_jax.data.dataset import Dataset
from ncfine_jax.errors import ConfigError, DataError

DATASET_NAMES = ("cifar10", "cifar100", "digits", "gaussian_mixture", "tfds:<name>")

_OFFICIAL = object()  # default for md5=: the official checksum of the archive


def load_dataset(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    **kw: Any,
) -> Dataset:
    """Load a dataset by name or path.

    Sources:
      * ``"cifar10"``, ``"cifar100"``: the official archive (python or binary format, the
        .tar.gz or the extracted folder, under its official name) looked up in
        ``data_dir``, then ``$NCFINE_DATA_DIR``, then ``<cache>/downloads``; when none is
        found and ``download`` is true, the official python-format archive is downloaded
        into ``<cache>/downloads`` and its md5 checked. Options ``url=`` and ``md5=``
        replace the download address and checksum (``md5=None`` skips the check).
      * ``"digits"``: sklearn's 8x8 digits, float32 [n, 64] (options ``test_size``, ``seed``).
      * ``"gaussian_mixture"``: synthetic float32 features (options of
        ``sources.load_gaussian_mixture``).
      * ``"tfds:<name>"``: tensorflow-datasets, when it and TensorFlow are installed.
      * a path to an official CIFAR archive or folder, or to a class-folder image set
        (directory or .tar/.tar.gz laid out ``train|test/<class>/*.png|jpg``).

    Decoded archives are cached as checksummed .npy files under ``<cache>/decoded``
    (``cache_dir``, else ``$NCFINE_CACHE_DIR``, else ``~/.cache/ncfine_jax``), keyed by the
    source's path, size and modification time (see ``ncfine_jax.data.cache``).

    Returns:
      Dataset (uint8 [n, 32, 32, 3] images or float32 [n, d] features, int32 labels). The
      arrays of an archive or folder source are read-only (memory-mapped from the cache);
      the other sources return ordinary writable arrays.

    Raises:
      DataError: unknown name, missing path, nothing found (the message lists every place
        tried), failed or mismatching download, truncated/corrupt archive, bad images.
      ConfigError: options that the source does not take.
    """
    name = os.fspath(name_or_path)
    if name.lower() in ("cifar10", "cifar100", "digits", "gaussian_mixture"):
        name = name.lower()
    cache = cache_root(cache_dir)
    if name in ("cifar10", "cifar100"):
        url = kw.pop("url", None)
        md5 = kw.pop("md5", _OFFICIAL)
        _no_options(name, kw)
        return _load_cifar_by_name(name, data_dir, cache, download, url, md5)
    if name == "digits":
        _only_options(name, kw, ("test_size", "seed"))
        return sources.load_digits(**kw)
    if name == "gaussian_mixture":
        _only_options(name, kw, ("num_clusters", "samples_per_cluster",
                                 "test_samples_per_cluster", "d_input", "sigma2", "tau2", "seed"))
        return sources.load_gaussian_mixture(**kw)
    if name.startswith("tfds:"):
        _no_options(name, kw)
        return sources.load_tfds(name[len("tfds:"):], data_dir=data_dir, download=download)
    _no_options(name, kw)
    path = Path(name).expanduser()
    if path.exists():
        return load_path(path, cache)
    if _looks_like_path(name):
        raise DataError(f"{name}: no such file or directory (a dataset path is an official "
                        "CIFAR archive or folder, or a class-folder set train/CLASS/*.png, "
                        "test/CLASS/*.png)")
    raise DataError(
        f"{name!r} is not a known dataset (expected one of {', '.join(DATASET_NAMES)}) "
        "nor an existing path"
    )


def load_path(path: Path, cache: Path, expected: str | None = None) -> Dataset:
    """Load an official CIFAR archive/folder or a class-folder set at ``path``, cached.

    Args:
      path: a .tar/.tar.gz file or a directory.
      cache: cache root; decoded arrays go to ``cache/decoded``.
      expected: "cifar10"/"cifar100" when looked up by name; a different content is an error.
    """
    path = path.resolve()
    if path.is_dir():
        listing = archive.list_dir(path)
        fingerprint = file_fingerprint([path] + [path / p for p in listing if _wanted(p)])
    elif path.is_file():
        listing = None
        fingerprint = file_fingerprint([path])
    else:
        raise DataError(f"{path}: not a regular file or directory")
    entry = cache_file(cache, _stem(path), path, fingerprint)
    cached = load_cached(entry)
    if cached is not None:
        try:
            ds = _from_arrays(cached)
        except (KeyError, ValueError):  # an entry from another layout: rebuild it
            ds = None
        if ds is not None and (expected is None or ds.name == expected):
            return ds

    if listing is not None:
        contents = archive.read_dir(path, _wanted)
    else:
        if not _is_tar(path):
            raise DataError(
                f"{path}: not a readable .tar/.tar.gz archive (corrupt or wrong format)"
            )
        contents = archive.read_tar(path, _wanted, what=expected or _stem(path))
    fmt = cifar.detect(contents, str(path))
    if fmt is not None:
        arrays = cifar.decode(contents, fmt, str(path))
        arrays["name"] = fmt.dataset
    elif folder.looks_like_folder_set(contents):
        arrays = folder.decode(contents, str(path))
        arrays["name"] = _stem(path)
    else:
        raise DataError(
            f"{path}: neither an official CIFAR archive nor a class-folder set "
            "(no CIFAR batches and no train/<class>/*.png|jpg found)"
        )
    del contents
    if expected is not None and arrays["name"] != expected:
        raise DataError(f"{expected}: {path} holds {arrays['name']}, not {expected}")
    ds = Dataset(**{k: v for k, v in arrays.items()})
    save_cached(entry, _to_arrays(ds))
    for k in _ARRAY_FIELDS:  # read-only like the memory-mapped arrays of a cached load
        if getattr(ds, k) is not None:
            getattr(ds, k).flags.writeable = False
    return ds


def locate_cifar(name: str, data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """Where ``load_dataset(name)`` finds the official archive of ``name`` ("cifar10" or
    "cifar100") without downloading: (the archive or folder, or None; the places tried).
    Looked up in ``data_dir``, then ``$NCFINE_DATA_DIR``, then ``<cache>/downloads``."""
    search = []
    if data_dir is not None:
        search.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_ENV)
    if env:
        search.append(Path(env).expanduser())
    search.append(cache_root(cache_dir) / "downloads")
    return cifar.find_local(name, search)


def download_source(name: str) -> cifar.CifarFormat:
    """The official archive ``load_dataset(name)`` downloads when it is found nowhere."""
    return next(f for f in cifar.formats_of(name) if f.fmt == "python")


def _load_cifar_by_name(name, data_dir, cache: Path, download: bool, url, md5) -> Dataset:
    found, tried = locate_cifar(name, data_dir, cache)
    if found is None:
        tried_text = "; ".join(tried)
        fmt = download_source(name)
        remedy = (f"give the data with --data PATH (the official {fmt.archive} from "
                  f"{cifar.HOME_PAGE}, or a class-folder set train/CLASS/*.png, "
                  f"test/CLASS/*.png, as a folder or .tar.gz) or put {fmt.archive} into "
                  f"${DATA_ENV}")
        if not download:
            raise DataError(f"{name}: no official archive found (tried {tried_text}); "
                            f"download disabled; {remedy}")
        try:
            found = download_file(url or fmt.url, cache / "downloads" / fmt.archive,
                                  fmt.md5 if md5 is _OFFICIAL else md5)
        except DataError as e:
            raise DataError(
                f"{name}: no official archive found (tried {tried_text}); {e}; {remedy}"
            ) from None
    return load_path(found, cache, expected=name)


# --------------------------------------------------------------------------- helpers


def _wanted(path: str) -> bool:
    return cifar.is_cifar_member(path) or folder.keep(path)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _stem(path: Path) -> str:
    return re.sub(r"\.(tar\.gz|tgz|tar)$", "", path.name) or path.name


def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.startswith(("~", ".")) or bool(
        re.search(r"\.(tar\.gz|tgz|tar|gz)$", name)
    )


def _no_options(name: str, kw: dict) -> None:
    if kw:
        raise ConfigError(f"load_dataset({name!r}): unexpected options {sorted(kw)}")


def _only_options(name: str, kw: dict, allowed: tuple[str, ...]) -> None:
    extra = set(kw) - set(allowed)
    if extra:
        raise ConfigError(
            f"load_dataset({name!r}): unexpected options {sorted(extra)} "
            f"(allowed: {', '.join(allowed)})"
        )


_ARRAY_FIELDS = ("x_train", "y_train", "x_test", "y_test", "y_train_coarse", "y_test_coarse")


def _to_arrays(ds: Dataset) -> dict[str, np.ndarray]:
    out = {k: getattr(ds, k) for k in _ARRAY_FIELDS if getattr(ds, k) is not None}
    out["name"] = np.array(ds.name)
    out["class_names"] = np.array(ds.class_names)
    if ds.coarse_class_names is not None:
        out["coarse_class_names"] = np.array(ds.coarse_class_names)
    return out


def _from_arrays(d: dict[str, np.ndarray]) -> Dataset:
    return Dataset(
        name=str(d["name"]),
        class_names=d["class_names"].tolist(),
        coarse_class_names=d["coarse_class_names"].tolist() if "coarse_class_names" in d else None,
        **{k: d.get(k) for k in _ARRAY_FIELDS},
    )
