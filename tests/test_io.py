import json

import numpy as np
import pytest

from ncfine_jax import io


def test_atomic_json_roundtrip_and_nan(tmp_path):
    p = tmp_path / "a" / "r.json"
    io.atomic_write_json(p, {"x": np.float32(1.5), "arr": np.arange(3), "bad": float("nan")})
    assert io.read_json(p) == {"x": 1.5, "arr": [0, 1, 2], "bad": None}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "r.json"
    io.atomic_write_json(p, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert json.loads(p.read_text()) == {"v": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_npz_and_jsonl(tmp_path):
    io.atomic_save_npz(tmp_path / "f.npz", a=np.ones((2, 3), np.float32))
    assert np.load(tmp_path / "f.npz")["a"].shape == (2, 3)
    io.append_jsonl(tmp_path / "log.jsonl", {"epoch": 1})
    io.append_jsonl(tmp_path / "log.jsonl", {"epoch": 2})
    assert [r["epoch"] for r in io.read_jsonl(tmp_path / "log.jsonl")] == [1, 2]


def test_load_json_is_one_error_line_naming_the_file(tmp_path):
    from ncfine_jax.errors import DataError, NcfineError

    good = tmp_path / "r.json"
    io.atomic_write_json(good, {"v": 1})
    assert io.load_json(good, "results") == {"v": 1}
    io.append_jsonl(tmp_path / "log.jsonl", {"epoch": 1})
    assert io.load_json(tmp_path / "log.jsonl", "log", lines=True) == [{"epoch": 1}]
    missing = tmp_path / "none.json"
    with pytest.raises(NcfineError, match=rf"^results {missing}: not found$"):
        io.load_json(missing, "results")
    bad = tmp_path / "bad.json"
    bad.write_text('{"v": ')
    with pytest.raises(DataError, match=rf"^run config {bad}: unreadable \(Expecting value"):
        io.load_json(bad, "run config", DataError)
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe{\n")
    with pytest.raises(DataError, match=r"^log .*bin.jsonl: unreadable \(.*utf-8") as e:
        io.load_json(tmp_path / "bin.jsonl", "log", DataError, lines=True)
    assert "\n" not in str(e.value)
    with pytest.raises(NcfineError, match=rf"^results {tmp_path}: unreadable \(Is a directory\)$"):
        io.load_json(tmp_path, "results")
