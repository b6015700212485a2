"""Data sources: official CIFAR formats, class-folder sets, download, cache, bad input."""

import errno
import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import re
import shutil
import tarfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from ncfine_jax.data import Dataset, load_dataset
from ncfine_jax.data import cache as cache_mod
from ncfine_jax.data import cifar as cifar_mod
from ncfine_jax.data import folder as folder_mod
from ncfine_jax.data.sources import tfds_available
from ncfine_jax.errors import ConfigError, DataError
from ncfine_jax.labels import CIFAR100_CLASS_NAMES, CIFAR100_SUPERCLASS

N_PER_BATCH = 3  # rows per official batch file in the generated archives


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Each test sees no data dir and its own cache dir (never ~/.cache)."""
    monkeypatch.delenv("NCFINE_DATA_DIR", raising=False)
    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- builders


def _fake_split(rng, n, num_classes):
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, num_classes, size=n)
    return x, y


def _rows(x):
    """NHWC images -> official channel-major rows [n, 3072]."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)


def make_cifar(root: Path, dataset: str, fmt: str, seed: int = 0, as_tar: bool = True):
    """Write a tiny official-layout CIFAR release; return (path, expected arrays)."""
    rng = np.random.default_rng(seed)
    spec = next(f for f in cifar_mod.FORMATS if f.dataset == dataset and f.fmt == fmt)
    top = root / spec.folder
    top.mkdir(parents=True)
    n_train_files = len(spec.train)
    per_file = N_PER_BATCH if dataset == "cifar10" else 5 * N_PER_BATCH
    num_classes = 10 if dataset == "cifar10" else 100
    xs, ys = [], []
    for member in spec.train + (spec.test,):
        x, y = _fake_split(rng, per_file, num_classes)
        xs.append(x)
        ys.append(y)
        coarse = CIFAR100_SUPERCLASS[y]
        if fmt == "python":
            d = {b"data": _rows(x)}
            if dataset == "cifar10":
                d[b"labels"] = y.tolist()
            else:
                d[b"fine_labels"] = y.tolist()
                d[b"coarse_labels"] = coarse.tolist()
            (top / member).write_bytes(pickle.dumps(d, protocol=2))
        else:
            labels = [y[:, None]] if dataset == "cifar10" else [coarse[:, None], y[:, None]]
            rows = np.concatenate([np.asarray(l, np.uint8) for l in labels] + [_rows(x)], axis=1)
            (top / member).write_bytes(rows.tobytes())
    if fmt == "python" and dataset == "cifar10":
        names = [f"c10_{i}" for i in range(10)]  # meta names win over the defaults
        meta = {b"label_names": [n.encode() for n in names]}
        (top / "batches.meta").write_bytes(pickle.dumps(meta))
    elif fmt == "binary" and dataset == "cifar10":
        names = [f"c10_{i}" for i in range(10)]
        (top / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    else:
        names = list(CIFAR100_CLASS_NAMES)
    expected = {
        "x_train": np.concatenate(xs[:n_train_files]),
        "y_train": np.concatenate(ys[:n_train_files]),
        "x_test": xs[-1],
        "y_test": ys[-1],
        "class_names": names,
    }
    if not as_tar:
        return top, expected
    archive = root / spec.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname=spec.folder)
    return archive, expected


def _png(arr) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_folder_tar(path: Path, classes, n_train=2, n_test=1, seed=0, prefix="",
                    extra=None, empty_dirs=()):
    """Write split/class/NN.png (lossless) into a .tar.gz; return the images by split."""
    rng = np.random.default_rng(seed)
    images = {"train": {}, "test": {}}
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for d in empty_dirs:
            info = tarfile.TarInfo(prefix + d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for split, n in (("train", n_train), ("test", n_test)):
            for c in classes:
                imgs = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
                images[split][c] = imgs
                for i, im in enumerate(imgs):
                    add(f"{split}/{c}/{i:02d}.png", _png(im))
        for name, data in (extra or {}).items():
            add(name, data)
    return images


def _assert_matches(ds: Dataset, expected: dict):
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(ds, k), expected[k], err_msg=k)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.class_names == expected["class_names"]


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("as_tar", [True, False])
def test_official_formats(tmp_path, dataset, fmt, as_tar):
    path, expected = make_cifar(tmp_path / "src", dataset, fmt, as_tar=as_tar)
    ds = load_dataset(path)
    _assert_matches(ds, expected)
    assert ds.name == dataset and ds.is_image
    assert ds.num_classes == (10 if dataset == "cifar10" else 100)
    if dataset == "cifar100":
        np.testing.assert_array_equal(ds.y_train_coarse, CIFAR100_SUPERCLASS[ds.y_train])
        assert len(ds.coarse_class_names) == 20
    else:
        assert ds.y_train_coarse is None


def test_lookup_by_name_and_env(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _, expected = make_cifar(data, "cifar10", "binary")
    ds = load_dataset("cifar10", data_dir=data, download=False)
    _assert_matches(ds, expected)
    monkeypatch.setenv("NCFINE_DATA_DIR", str(data))
    _assert_matches(load_dataset("cifar10", download=False), expected)
    # A cifar-100 archive does not satisfy "cifar10", and nothing is found for "cifar100".
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", data_dir=tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "\n" not in msg and "download disabled" in msg
    for tried in ("nowhere (no such directory)", "cifar-100-python.tar.gz",
                  str(data / "cifar-100-binary"), str(tmp_path / "cache" / "downloads")):
        assert tried in msg


def _entries(cache: Path) -> list[Path]:
    """Visible entries (anything but hidden temp folders) in ``<cache>/decoded``."""
    decoded = cache / "decoded"
    return sorted(p for p in decoded.iterdir() if not p.name.startswith(".")) if (
        decoded.exists()) else []


def _forbid_decode(monkeypatch):
    def no_decode(*a, **k):
        raise AssertionError("decoded again despite a cache entry")

    monkeypatch.setattr(cifar_mod, "decode", no_decode)


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    path, expected = make_cifar(tmp_path / "src", "cifar10", "python")
    cache = tmp_path / "c2"
    first = load_dataset(path, cache_dir=cache)
    entries = _entries(cache)
    assert len(entries) == 1 and entries[0].is_dir()
    assert sorted(p.name for p in entries[0].iterdir()) == sorted(
        ["manifest.json", "x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy", "name.npy",
         "class_names.npy"])
    assert not first.x_train.flags.writeable  # decoded arrays are read-only like cached ones

    _forbid_decode(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid entry loads without any warning
        hit = load_dataset(path, cache_dir=cache)
    _assert_matches(hit, expected)
    assert hit.name == first.name == "cifar10" and hit.class_names == first.class_names
    for k in ("x_train", "y_train", "x_test", "y_test"):
        arr = getattr(hit, k)
        assert not arr.flags.writeable and not arr.flags.owndata  # memory-mapped, no copy
    with pytest.raises(ValueError, match="read-only"):
        hit.x_train[0, 0, 0, 0] = 1
    sub = hit.subset(10, 3, seed=0)  # downstream copies are ordinary arrays
    assert sub.x_train.flags.writeable and sub.x_train.shape == (10, 32, 32, 3)
    monkeypatch.undo()
    monkeypatch.delenv("NCFINE_DATA_DIR", raising=False)

    # Replace the source: the cache key (path, size, mtime) changes, the new data load,
    # and the stale entry is dropped.
    path.unlink()
    (tmp_path / "src" / "cifar-10-batches-py").rename(tmp_path / "old")
    path2, expected2 = make_cifar(tmp_path / "src", "cifar10", "python", seed=1)
    assert path2 == path
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    _assert_matches(load_dataset(path, cache_dir=cache), expected2)
    assert [p.name for p in _entries(cache)] != [e.name for e in entries]
    assert len(list((cache / "decoded").glob("*"))) == 1
    assert not any(p.name.startswith(".") for p in (cache / "decoded").iterdir())


def _flip_data_byte(file: Path) -> None:
    """Overwrite one byte in the data region (not the header) of a .npy file."""
    with open(file, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        start = f.tell()
    data = bytearray(file.read_bytes())
    pos = start + (len(data) - start) // 2
    data[pos] ^= 0xFF
    file.write_bytes(bytes(data))


def _wrong_shape(file: Path) -> None:
    np.save(file, np.zeros(7, np.int32))


DAMAGE = {  # kind -> (file damaged, damage, problem named in the warning, file named there)
    "overwritten byte": ("x_train.npy", _flip_data_byte, "checksum mismatch", "x_train.npy"),
    "overwritten label": ("y_test.npy", _flip_data_byte, "checksum mismatch", "y_test.npy"),
    "truncated array": ("x_train.npy", lambda f: f.write_bytes(f.read_bytes()[:-100]),
                        "unreadable array", "x_train.npy"),
    "header only": ("x_test.npy", lambda f: f.write_bytes(f.read_bytes()[:128]),
                    "unreadable array", "x_test.npy"),
    "missing array": ("y_train.npy", Path.unlink, "missing array file", "y_train.npy"),
    "wrong shape": ("y_train.npy", _wrong_shape, "the manifest says", "y_train.npy"),
    "missing manifest": ("manifest.json", Path.unlink, "missing manifest", "manifest.json"),
    "garbled manifest": ("manifest.json", lambda f: f.write_bytes(b"\x00{garbage\xff"),
                         "unreadable manifest", "manifest.json"),
    "truncated manifest": ("manifest.json", lambda f: f.write_bytes(f.read_bytes()[:40]),
                           "unreadable manifest", "manifest.json"),
    "manifest not an object": ("manifest.json", lambda f: f.write_text("[1, 2]"),
                               "not a JSON object", "manifest.json"),
    "manifest of another format": (
        "manifest.json", lambda f: f.write_text(json.dumps({**json.loads(f.read_text()),
                                                             "format": 1})),
        "format 1", "manifest.json"),
    "manifest checksum edited": (  # the first array listed is x_train
        "manifest.json",
        lambda f: f.write_text(re.sub(r'"checksum": "[0-9a-f]{8}"', '"checksum": "00000000"',
                                      f.read_text(), count=1)),
        "checksum mismatch (manifest 00000000", "x_train.npy"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_cache_entry_warns_and_rebuilds(tmp_path, monkeypatch, kind):
    path, expected = make_cifar(tmp_path / "src", "cifar10", "binary")
    cache = tmp_path / "c"
    load_dataset(path, cache_dir=cache)
    (entry,) = _entries(cache)
    name, damage, problem, named = DAMAGE[kind]
    damage(entry / name)

    with pytest.warns(UserWarning) as record:
        _assert_matches(load_dataset(path, cache_dir=cache), expected)
    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages
    msg = messages[0]
    assert "\n" not in msg and problem in msg and "rebuilding" in msg, msg
    assert msg.startswith(f"cache entry {entry / named}: "), msg

    # The rebuilt entry is complete and used: no decode, no warning.
    assert [p.name for p in _entries(cache)] == [entry.name]
    _forbid_decode(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_matches(load_dataset(path, cache_dir=cache), expected)


def test_cache_entry_replaced_by_a_file_is_rebuilt(tmp_path):
    path, expected = make_cifar(tmp_path / "src", "cifar10", "python", as_tar=False)
    load_dataset(path)
    (entry,) = _entries(tmp_path / "cache")
    shutil.rmtree(entry)
    entry.write_bytes(b"not a directory")
    with pytest.warns(UserWarning, match="unreadable manifest.*rebuilding"):
        _assert_matches(load_dataset(path), expected)
    assert entry.is_dir() and (entry / "manifest.json").is_file()


def test_old_npz_cache_entries_are_ignored(tmp_path):
    path, expected = make_cifar(tmp_path / "src", "cifar10", "python")
    decoded = tmp_path / "cache" / "decoded"
    decoded.mkdir(parents=True)
    # Entries of the older single-.npz layout: one of this source (garbage on purpose: it
    # must never be read), one of another source; and a dead writer's leftover folder.
    future = cache_mod.cache_file(tmp_path / "cache", "cifar-10-python", path, "f" * 64)
    prefix = future.name.rsplit("-", 1)[0]
    same_source = decoded / f"{prefix}-0123456789abcdef.npz"
    same_source.write_bytes(b"garbage from an old layout")
    other_source = decoded / "other-89abcdef-0123456789abcdef.npz"
    other_source.write_bytes(b"another source")
    leftover = decoded / f".{prefix}-0123456789abcdef.k2j4.tmp"
    leftover.mkdir()
    (leftover / "x_train.npy").write_bytes(b"half written")
    old = time.time() - 2 * 3600
    os.utime(leftover, (old, old))
    fresh = decoded / f".{prefix}-0123456789abcdef.q7z1.tmp"  # may be a live writer's
    fresh.mkdir()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_matches(load_dataset(path), expected)
    assert not same_source.exists() and not leftover.exists()
    assert other_source.read_bytes() == b"another source" and fresh.is_dir()
    assert len([p for p in _entries(tmp_path / "cache") if p.is_dir()]) == 1


def test_unwritable_cache_only_costs_speed(tmp_path, monkeypatch):
    path, expected = make_cifar(tmp_path / "src", "cifar10", "python")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a regular file where the cache directory should be")
    with pytest.warns(UserWarning, match=r"could not write cache entry .*not_a_dir"):
        _assert_matches(load_dataset(path, cache_dir=blocker), expected)
    assert blocker.read_text().startswith("a regular file")

    # Disk full halfway through the entry: a warning, the data, and no partial entry.
    real_write = np.lib.format.write_array
    calls = []

    def full_disk(f, array, **kw):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(f, array, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", full_disk)
    cache = tmp_path / "full"
    with pytest.warns(UserWarning, match="could not write cache entry .*No space left"):
        _assert_matches(load_dataset(path, cache_dir=cache), expected)
    assert list((cache / "decoded").iterdir()) == []


def test_save_over_existing_entry(tmp_path, monkeypatch):
    entry = cache_mod.cache_file(tmp_path, "set", tmp_path / "set.tar", "a" * 64)
    old = {"x": np.arange(6, dtype=np.int32).reshape(2, 3), "name": np.array("set")}
    new = {"x": np.arange(6, 12, dtype=np.int32).reshape(2, 3), "name": np.array("set")}
    cache_mod.save_cached(entry, old)
    cache_mod.save_cached(entry, new)  # replaces the entry in place of the old one
    got = cache_mod.load_cached(entry)
    np.testing.assert_array_equal(got["x"], new["x"])
    assert got["name"].shape == () and str(got["name"]) == "set"
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]
    # A concurrent writer installed the entry first (it cannot be moved aside here): its
    # entry stays, this writer's temporary folder is removed, nothing is reported.
    monkeypatch.setattr(cache_mod, "_remove", lambda path: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache_mod.save_cached(entry, old)
    np.testing.assert_array_equal(cache_mod.load_cached(entry)["x"], new["x"])
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]


def test_array_checksums():
    rng = np.random.default_rng()
    big = rng.integers(0, 256, size=(40 << 20) + 12345, dtype=np.uint8)  # 6 blocks, threads
    small = {"labels": rng.integers(0, 10, 1000).astype(np.int32), "name": np.array("cifar10"),
             "empty": np.zeros((0, 3), np.float32)}
    sums = cache_mod.array_checksums({"big": big, **small})
    assert sums == cache_mod.array_checksums({"big": big.copy(), **small})
    assert all(re.fullmatch(r"[0-9a-f]{8}", v) for v in sums.values())
    # Every single overwritten byte changes the checksum: first, last, block edges, random.
    for pos in [0, len(big) - 1, 8 << 20, (8 << 20) - 1, *rng.integers(0, len(big), 3)]:
        damaged = big.copy()
        damaged[pos] ^= 1 + rng.integers(0, 255)
        assert cache_mod.array_checksums({"big": damaged})["big"] != sums["big"], pos
    # Moving a block (same bytes, other order) is caught too.
    swapped = np.concatenate([big[8 << 20:16 << 20], big[:8 << 20], big[16 << 20:]])
    assert cache_mod.array_checksums({"big": swapped})["big"] != sums["big"]
    assert cache_mod.array_checksums({"name": np.array("cifar11")})["name"] != sums["name"]


def test_refuses_malicious_pickle(tmp_path):
    path, _ = make_cifar(tmp_path / "src", "cifar10", "python", as_tar=False)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="test_batch: cannot be unpickled"):
        load_dataset(path)


def test_corrupt_and_truncated(tmp_path):
    path, _ = make_cifar(tmp_path / "src", "cifar10", "binary")
    data = path.read_bytes()
    cut = tmp_path / "cut" / path.name
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_dataset(cut)
    assert str(cut) in str(err.value)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(2000))
    with pytest.raises(DataError, match="junk.tar.gz"):
        load_dataset(junk)
    assert not (tmp_path / "cache" / "decoded").exists() or not any(
        (tmp_path / "cache" / "decoded").iterdir()
    )
    # An extracted folder whose record file lost bytes.
    folder, _ = make_cifar(tmp_path / "dir", "cifar10", "binary", as_tar=False)
    bin_file = folder / "test_batch.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"test_batch.bin: size .* not a multiple"):
        load_dataset(folder)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=r"missing"):
        load_dataset(folder)


# --------------------------------------------------------------------------- download


@pytest.fixture
def http_root(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/www; yields (dir, base_url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_good_and_bad_checksum(tmp_path, http_root):
    www, base = http_root
    archive, expected = make_cifar(tmp_path / "src", "cifar10", "python")
    (www / archive.name).write_bytes(archive.read_bytes())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    downloads = tmp_path / "cache" / "downloads"
    url = f"{base}/{archive.name}"

    with pytest.raises(DataError, match="md5 checksum mismatch") as err:
        load_dataset("cifar10", url=url, md5="0" * 32)
    assert url in str(err.value) and "\n" not in str(err.value)
    assert not downloads.exists() or list(downloads.iterdir()) == []  # no partial file

    with pytest.raises(DataError, match="failed"):
        load_dataset("cifar10", url=f"{base}/missing.tar.gz", md5=md5)
    assert not downloads.exists() or list(downloads.iterdir()) == []

    ds = load_dataset("cifar10", url=url, md5=md5)
    _assert_matches(ds, expected)
    assert [p.name for p in downloads.iterdir()] == ["cifar-10-python.tar.gz"]
    # Found locally now: no second download (the server no longer has the file).
    (www / archive.name).unlink()
    _assert_matches(load_dataset("cifar10", url=url, md5=md5), expected)


# --------------------------------------------------------------------------- class folders


def test_folder_tar_and_dir(tmp_path):
    classes = ["zebra", "ant", "moth"]
    path = tmp_path / "animals.tar.gz"
    imgs = make_folder_tar(path, classes, n_train=3, n_test=2, prefix="animals/",
                           extra={"animals/README.txt": b"hi", "animals/train/ant/._00.png": b"x"})
    ds = load_dataset(path)
    assert ds.name == "animals" and ds.class_names == ["ant", "moth", "zebra"]  # sorted
    assert ds.x_train.shape == (9, 32, 32, 3) and ds.x_test.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(ds.x_train[:3], imgs["train"]["ant"])  # PNG is lossless
    np.testing.assert_array_equal(ds.x_test[4:], imgs["test"]["zebra"])
    # The same set extracted to a directory.
    out = tmp_path / "extracted"
    with tarfile.open(path) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(out, filter="data")
        else:
            tar.extractall(out)
    ds2 = load_dataset(out / "animals")
    np.testing.assert_array_equal(ds2.x_train, ds.x_train)
    np.testing.assert_array_equal(ds2.y_test, ds.y_test)


def test_folder_cifar100_classes_get_superclasses(tmp_path):
    path = tmp_path / "c100.tar.gz"
    make_folder_tar(path, list(CIFAR100_CLASS_NAMES)[::-1], n_train=1, n_test=1)
    ds = load_dataset(path)
    assert ds.class_names == list(CIFAR100_CLASS_NAMES)
    np.testing.assert_array_equal(ds.y_train, np.arange(100))
    np.testing.assert_array_equal(ds.y_test_coarse, CIFAR100_SUPERCLASS)
    assert folder_mod.class_order({"b", "a"}) == ["a", "b"]


def test_folder_errors(tmp_path):
    from PIL import Image

    small = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(small, format="PNG")
    bad = tmp_path / "bad_shape.tar.gz"
    make_folder_tar(bad, ["a", "b"], extra={"train/b/99.png": small.getvalue()})
    with pytest.raises(DataError, match=r"image train/b/99.png has shape 16x16x3"):
        load_dataset(bad)

    empty = tmp_path / "empty.tar.gz"
    make_folder_tar(empty, ["a", "b"], empty_dirs=["train/c"])
    with pytest.raises(DataError, match=r"class folder train/c has no"):
        load_dataset(empty)

    broken = tmp_path / "broken.tar.gz"
    make_folder_tar(broken, ["a"], extra={"test/a/77.jpg": b"not a jpeg"})
    with pytest.raises(DataError, match=r"test/a/77.jpg cannot be decoded"):
        load_dataset(broken)

    only_train = tmp_path / "only_train"
    (only_train / "train" / "a").mkdir(parents=True)
    (only_train / "train" / "a" / "0.png").write_bytes(_png(np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(DataError, match=r"no test/<class>"):
        load_dataset(only_train)
    (only_train / "test" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"class folder test/a has no"):
        load_dataset(only_train)

    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "x.txt").write_text("x")
    with pytest.raises(DataError, match="neither an official CIFAR archive nor a class-folder"):
        load_dataset(nothing)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # nothing cached


def test_unknown_name_missing_path_and_options(tmp_path):
    with pytest.raises(DataError, match="not a known dataset"):
        load_dataset("imagenet42")
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(str(tmp_path / "missing.tar.gz"))
    with pytest.raises(ConfigError, match="unexpected options"):
        load_dataset("digits", bogus=1)
    if not tfds_available():
        with pytest.raises(DataError, match="tensorflow-datasets and tensorflow are not installed"):
            load_dataset("tfds:mnist")


# --------------------------------------------------------------------------- other sources


def test_digits_and_subset():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.x_train.dtype == np.float32 and not ds.is_image and ds.num_classes == 10
    assert ds.x_train.max() == 16.0  # 0..16 scale kept as-is
    assert np.bincount(ds.y_test).min() >= 35  # stratified
    np.testing.assert_array_equal(load_dataset("digits").y_train, ds.y_train)  # fixed split
    sub = ds.subset(25, 10, seed=1)
    assert np.bincount(sub.y_train, minlength=10).tolist().count(3) == 5  # 25 = 5x3 + 5x2
    assert sorted(np.bincount(sub.y_test, minlength=10)) == [1] * 10
    assert sub.subset(None, 5).x_train.shape == (25, 64)
    with pytest.raises(ConfigError):
        ds.subset(5000, 10)
    with pytest.raises(ConfigError, match="n_train=True"):
        ds.subset(True, 10)
    with pytest.raises(ConfigError, match="seed must be a non-negative int, got -1"):
        ds.subset(25, 10, seed=-1)
    # sklearn's own ValueError for a bad split becomes one ConfigError line.
    with pytest.raises(ConfigError, match="digits: test_size=5, .*number of classes") as err:
        load_dataset("digits", test_size=5)
    assert "\n" not in str(err.value)


def test_gaussian_mixture():
    gm = pytest.importorskip("ncfine_jax.gaussian_mixture",
                             reason="gaussian_mixture module not written yet")
    import jax

    ds = load_dataset("gaussian_mixture", num_clusters=4, samples_per_cluster=6,
                      test_samples_per_cluster=3, d_input=5, seed=1)
    assert ds.x_train.shape == (24, 5) and ds.x_test.shape == (12, 5)
    assert ds.x_train.dtype == np.float32 and ds.num_classes == 4
    assert np.bincount(ds.y_train).tolist() == [6] * 4
    assert np.bincount(ds.y_test).tolist() == [3] * 4
    # One draw of 6 + 3 samples per cluster; the first 6 of each cluster are train.
    x, clusters, _ = gm.make_gaussian_mixture(jax.random.key(1), num_clusters=4,
                                              samples_per_cluster=9, d_input=5)
    x = np.asarray(x)
    train = np.concatenate([np.flatnonzero(np.asarray(clusters) == c)[:6] for c in range(4)])
    np.testing.assert_allclose(np.sort(ds.x_train, axis=0), np.sort(x[train], axis=0))
    np.testing.assert_array_equal(ds.y_train_coarse, ds.y_train % 2)  # eq. 4 with C~ = C/2
    again = load_dataset("gaussian_mixture", num_clusters=4, samples_per_cluster=6,
                         test_samples_per_cluster=3, d_input=5, seed=1)
    np.testing.assert_array_equal(again.x_test, ds.x_test)


@pytest.mark.skipif(not tfds_available(), reason="tensorflow-datasets/tensorflow not installed")
def test_tfds_available_but_offline():
    with pytest.raises(DataError, match="tfds:"):
        load_dataset("tfds:not_a_dataset_name_xyz", download=False)


# --------------------------------------------------------------------------- shared data


@pytest.mark.slow
def test_shared_cifar10_jpeg(shared_cifar10_jpeg, shared_cifar10_cache):
    cache = shared_cifar10_cache
    ds = load_dataset(shared_cifar10_jpeg, cache_dir=cache)
    assert ds.x_train.shape == (50_000, 32, 32, 3) and ds.x_test.shape == (10_000, 32, 32, 3)
    assert np.bincount(ds.y_train).tolist() == [5_000] * 10
    assert np.bincount(ds.y_test).tolist() == [1_000] * 10
    assert ds.class_names[0] == "airplane" and ds.class_names[-1] == "truck"
    assert ds.x_train.std() > 40  # real images, not blanks
    again = load_dataset(shared_cifar10_jpeg, cache_dir=cache)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    assert not again.x_train.flags.writeable and again.name == ds.name == "cifar10_jpeg"
    assert len(_entries(cache)) == 1
