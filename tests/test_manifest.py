"""The workdir manifest: what is recorded, what --overwrite may remove, what verify finds."""

from __future__ import annotations

import json
import os

import pytest

from ncfine_jax import manifest
from ncfine_jax import workdir as wdir
from ncfine_jax.errors import WorkdirError
from ncfine_jax.io import append_jsonl, atomic_write_json, atomic_write_text


def files_of(root):
    return manifest.read(root) or {}


def test_writes_under_a_locked_workdir_are_recorded_and_nothing_else(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside.json"
    with wdir.lock(run):
        atomic_write_json(run / "results.json", {"a": 1})
        atomic_write_text(run / "figures" / "x.png", "png")
        append_jsonl(run / "log.jsonl", {"epoch": 1})
        atomic_write_json(outside, {})
    atomic_write_json(run / "late.json", {})  # after the lock: not this command's record
    files = files_of(run)
    assert sorted(files) == ["figures/x.png", "log.jsonl", "results.json"]
    assert files["results.json"]["sha256"] == manifest.sha256(run / "results.json")
    assert files["log.jsonl"]["sha256"] is None  # grows by appending: name and size only
    assert manifest.MANIFEST_FILE not in files


def test_nested_workdirs_keep_their_own_manifests(tmp_path):
    grid, point = tmp_path / "grid", tmp_path / "grid" / "p1"
    with wdir.lock(grid), wdir.lock(point), wdir.lock(point):  # reentrant
        atomic_write_json(grid / "grid.json", {})
        atomic_write_json(point / "experiment.json", {})
    assert sorted(files_of(grid)) == ["grid.json"]
    assert sorted(files_of(point)) == ["experiment.json"]


def test_remove_recorded_spares_user_files_and_never_follows_links(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.png").write_text("keep")
    with wdir.lock(run):
        atomic_write_text(run / "figures" / "a.png", "a")
        atomic_write_text(run / "figures" / "b.png", "b")
    (run / "figures" / "mine.png").write_text("mine")
    # A recorded folder swapped for a link to another folder: nothing removed through it.
    (run / "figures" / "b.png").unlink()
    os.symlink(elsewhere, run / "linked")
    data = json.loads((run / manifest.MANIFEST_FILE).read_text())
    data["files"]["linked/precious.png"] = {"size": 4, "sha256": None}
    (run / manifest.MANIFEST_FILE).write_text(json.dumps(data))
    manifest.remove_recorded(run)
    assert (run / "figures" / "mine.png").read_text() == "mine"
    assert not (run / "figures" / "a.png").exists()
    assert (elsewhere / "precious.png").read_text() == "keep"
    assert manifest.read(run) == {}  # emptied, kept: the folder is still a workdir


@pytest.mark.parametrize("content,needle", [
    ("[1, 2]", "not a manifest"),
    ('{"format": "ncfine_jax workdir manifest", "version": 9, "files": {}}', "version 9"),
    ('{"format": "ncfine_jax workdir manifest", "version": 1, "files": '
     '{"../victim/report.md": {"size": 1, "sha256": null}}}', "bad entry"),
    ('{"format": "ncfine_jax workdir manifest", "version": 1, "files": '
     '{"/etc/passwd": {"size": 1, "sha256": null}}}', "bad entry"),
    ('{"format": "ncfine_jax workdir manifest", "version": 1, "files": '
     '{"a": {"size": "1"}}}', "bad entry"),
    ("{not json", "unreadable manifest"),
])
def test_a_damaged_manifest_is_one_line_and_removes_nothing(tmp_path, content, needle):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.md").write_text("x")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "report.md").write_text("keep")
    (run / manifest.MANIFEST_FILE).write_text(content)
    with pytest.raises(WorkdirError, match=needle) as e:
        wdir.inspect(run, wdir.EXPERIMENT_FILE, {}, dict, overwrite=True)
    assert "python -m ncfine_jax.adopt" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(WorkdirError):
        manifest.remove_recorded(run)
    assert (tmp_path / "victim" / "report.md").read_text() == "keep"
    assert (run / "report.md").exists()


def test_a_command_stopped_right_after_claiming_a_folder_leaves_a_fresh_workdir(tmp_path):
    run = tmp_path / "run"
    with wdir.lock(run):  # killed here: before its first write was recorded
        pass
    assert manifest.read(run) == {}
    assert wdir.inspect(run, wdir.EXPERIMENT_FILE, {"lr": 1}, dict, overwrite=False) == "fresh"
    # Killed between a header's rename and its record: still this project's run, resumed.
    (run / wdir.EXPERIMENT_FILE).write_text('{"lr": 1}')
    assert wdir.inspect(run, wdir.EXPERIMENT_FILE, {"lr": 1}, dict, overwrite=False) == "resume"


def test_verify_finds_a_changed_byte_of_the_same_size(tmp_path):
    run = tmp_path / "run"
    with wdir.lock(run):
        atomic_write_text(run / "checkpoints" / "3" / "d" / "blob", "0123456789")
        atomic_write_text(run / "checkpoints" / "3" / "meta", "m")
    assert manifest.verify(run, "checkpoints/3") is None
    (run / "checkpoints" / "3" / "d" / "blob").write_text("0123456788")
    assert "does not match its checksum" in manifest.verify(run, "checkpoints/3")
    (run / "checkpoints" / "3" / "d" / "blob").write_text("0123456789")
    assert manifest.verify(run, "checkpoints/3") is None
    (run / "checkpoints" / "3" / "meta").unlink()
    assert "is missing" in manifest.verify(run, "checkpoints/3")
    assert "not recorded" in manifest.verify(run, "checkpoints/9")


def test_a_grid_reset_stays_inside_the_grid(tmp_path):
    grid, victim = tmp_path / "grid", tmp_path / "victim"
    with wdir.lock(victim):  # a real run of this project beside the grid
        atomic_write_text(victim / "report.md", "theirs")
        atomic_write_text(victim / "figures" / "keep.png", "theirs")
    with wdir.lock(grid), wdir.lock(grid / "lr0.1_wd0"):
        atomic_write_json(grid / "grid.json", {"points": [
            {"workdir": "../victim"}, {"workdir": str(victim)}, {"workdir": "lr0.1_wd0"}]})
        atomic_write_text(grid / "lr0.1_wd0" / "report.md", "ours")
    with wdir.lock(grid):
        wdir.reset_grid(grid, [])
    assert (victim / "report.md").read_text() == "theirs"
    assert (victim / "figures" / "keep.png").read_text() == "theirs"
    assert not (grid / "lr0.1_wd0").exists() and not (grid / "grid.json").exists()


def test_adopt_makes_an_old_workdir_a_run_again(tmp_path):
    from ncfine_jax.adopt import main as adopt_main

    run = tmp_path / "run"
    (run / "checkpoints" / "2").mkdir(parents=True)
    (run / "checkpoints" / "2" / "x").write_text("ckpt")
    (run / "experiment.json").write_text('{"lr": 0.1}')
    (run / "notes.txt").write_text("mine")
    with pytest.raises(WorkdirError, match="no manifest.json .*adopt it with"):
        wdir.inspect(run, wdir.EXPERIMENT_FILE, {"lr": 0.1}, dict, overwrite=True)
    adopt_main([str(run)])
    assert sorted(files_of(run)) == ["checkpoints/2/x", "experiment.json"]
    assert wdir.inspect(run, wdir.EXPERIMENT_FILE, {"lr": 0.1}, dict, overwrite=False) == "resume"
    with pytest.raises(WorkdirError, match="not a workdir of this project"):
        adopt_main([str(tmp_path / "run" / "checkpoints")])


def test_run_file_names_are_spelled_only_in_workdir_py():
    """Every name a RunDir / GridDir gives is written once, in workdir.py: no other module
    of the package holds it as a string literal (a renamed file is a change in one place)."""
    import ast
    from pathlib import Path

    import ncfine_jax

    run, grid = wdir.RunDir("r"), wdir.GridDir("g")
    names = {getattr(run, a).name for a in ("experiment", "mapping", "config", "log",
                                           "checkpoints", "features", "diverged", "results",
                                           "report", "figures", "distances")}
    names |= {grid.record.name, grid.summary.name, *wdir.RUN_FIGURES,
              wdir.GRID_HEATMAPS_FIGURE, wdir.GRID_BARS_FIGURE}
    package = Path(ncfine_jax.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "workdir.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings):
                # A folder name alone is also a word ("features" is a key of a feature
                # set): folders count in paths, file names anywhere.
                hits = [n for n in names
                        if (node.value == n and "." in n) or node.value.startswith(n + "/")
                        or node.value.endswith("/" + n)]
                if hits:
                    found.append(f"{path.relative_to(package)}:{node.lineno} {hits}")
    assert not found, found
    assert run.feature_file(7) == Path("r/features/epoch_0007.npz")
    assert grid.point("lr0.1_wd0").log == Path("g/lr0.1_wd0/log.jsonl")


# ------------------------------------------------------------------ folders on another disk


def _linked_run(tmp_path):
    """A workdir whose features/ and checkpoints/ are links to folders elsewhere (a
    scratch disk), with files written through them."""
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    for name in ("features", "checkpoints"):
        (scratch / name).mkdir(parents=True)
        run.mkdir(exist_ok=True)
        os.symlink(scratch / name, run / name)
    assert wdir.inspect(run, wdir.EXPERIMENT_FILE, {}, dict, overwrite=False) == "fresh"
    with wdir.lock(run):
        atomic_write_json(run / "experiment.json", {})
        atomic_write_text(run / "features" / "epoch_0001.npz", "f1")
        atomic_write_text(run / "checkpoints" / "1" / "d" / "blob", "c1")
        append_jsonl(run / "log.jsonl", {"epoch": 1})
    return run, scratch


def test_writes_through_a_linked_folder_are_recorded_and_verified(tmp_path):
    run, _ = _linked_run(tmp_path)
    assert sorted(files_of(run)) == ["checkpoints/1/d/blob", "experiment.json",
                                     "features/epoch_0001.npz", "log.jsonl"]
    assert manifest.verify(run, "features/epoch_0001.npz") is None
    assert manifest.verify(run, "checkpoints/1") is None
    assert wdir.last_good_checkpoint(run) == 1


def test_reset_removes_through_a_linked_folder_only_what_is_still_as_written(tmp_path):
    run, scratch = _linked_run(tmp_path)
    with wdir.lock(run):
        atomic_write_text(run / "features" / "epoch_0002.npz", "f2")
    (scratch / "features" / "mine.txt").write_text("mine")  # never recorded
    (scratch / "features" / "epoch_0002.npz").write_text("changed")  # not as written
    # A manifest entry naming a file it did not write there (no checksum): not removed.
    (scratch / "features" / "notes.md").write_text("keep")
    data = json.loads((run / manifest.MANIFEST_FILE).read_text())
    data["files"]["features/notes.md"] = {"size": 4, "sha256": None}
    (run / manifest.MANIFEST_FILE).write_text(json.dumps(data))
    with wdir.lock(run):
        wdir.reset(run)
    assert not (scratch / "features" / "epoch_0001.npz").exists()
    assert not (scratch / "checkpoints" / "1").exists()  # the emptied folders too
    assert (scratch / "features" / "mine.txt").read_text() == "mine"
    assert (scratch / "features" / "epoch_0002.npz").read_text() == "changed"
    assert (scratch / "features" / "notes.md").read_text() == "keep"
    assert (run / "features").is_symlink() and (run / "checkpoints").is_symlink()
    assert files_of(run) == {}
    # A link deeper down is still never followed, as-written or not.
    deeper = tmp_path / "deeper"
    deeper.mkdir()
    (deeper / "x.png").write_text("x")
    os.symlink(deeper, run / "figures")
    data["files"] = {"figures/x.png": {"size": 1, "sha256": manifest.sha256(deeper / "x.png")}}
    (run / manifest.MANIFEST_FILE).write_text(json.dumps(data))
    manifest.remove_recorded(run)  # figures/ is linked, but not named as linkable here
    assert (deeper / "x.png").exists()


def test_a_workdir_that_is_itself_a_link_is_recorded_and_reset_through_it(tmp_path):
    target = tmp_path / "scratch" / "run"
    target.mkdir(parents=True)
    run = tmp_path / "run"
    os.symlink(target, run)
    with wdir.lock(run):
        atomic_write_json(run / "results.json", {"a": 1})
    assert sorted(files_of(run)) == ["results.json"]
    (target / "mine.txt").write_text("mine")
    with wdir.lock(run):
        wdir.reset(run)
    assert not (target / "results.json").exists() and (target / "mine.txt").exists()


def test_links_prepared_before_the_first_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "1").mkdir()  # would look like a checkpoint of epoch 1
    os.symlink(busy, run / "checkpoints")
    with pytest.raises(WorkdirError, match=r"checkpoints links to .*busy, which is not empty "
                                           r".*nothing was changed; link it to an empty folder"):
        wdir.inspect(run, wdir.EXPERIMENT_FILE, {}, dict, overwrite=True)
    (busy / "1").rmdir()  # the remedy named: an empty folder
    assert wdir.inspect(run, wdir.EXPERIMENT_FILE, {}, dict, overwrite=False) == "fresh"
    os.symlink(tmp_path / "not_mounted", run / "features")
    with pytest.raises(WorkdirError, match=r"features links to .*not_mounted, which does not "
                                           r"exist; nothing was changed; create that folder"):
        wdir.inspect(run, wdir.EXPERIMENT_FILE, {}, dict, overwrite=False)
    (tmp_path / "not_mounted").mkdir()  # the remedy named
    assert wdir.inspect(run, wdir.EXPERIMENT_FILE, {}, dict, overwrite=False) == "fresh"
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(WorkdirError, match="dangling links to .*nowhere, which does not exist"):
        wdir.inspect(tmp_path / "dangling", wdir.EXPERIMENT_FILE, {}, dict, overwrite=False)


def test_adopt_records_the_files_of_a_linked_folder(tmp_path):
    from ncfine_jax.adopt import main as adopt_main

    run, scratch = tmp_path / "run", tmp_path / "scratch"
    (scratch / "2").mkdir(parents=True)
    (scratch / "2" / "x").write_text("ckpt")
    run.mkdir()
    os.symlink(scratch, run / "checkpoints")
    (run / "experiment.json").write_text('{"lr": 0.1}')
    adopt_main([str(run)])
    assert sorted(files_of(run)) == ["checkpoints/2/x", "experiment.json"]
    assert wdir.last_good_checkpoint(run) == 2
