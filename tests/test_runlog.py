"""A run's log.jsonl held against the checkpoint it resumes from and its epochs: what is
cut back silently, what is cut with a warning, what is refused (and that the remedy the
refusal names gives a log that passes)."""

from __future__ import annotations

import json
import warnings

import pytest

from ncfine_jax.errors import WorkdirError
from ncfine_jax.runlog import check_resume, read_log, write_log


def write(path, epochs):
    path.write_text("".join(json.dumps({"epoch": e, "loss": 1.0 / (i + 1)}) + "\n"
                            for i, e in enumerate(epochs)))
    return path


def delete_lines(path, numbers):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(l for i, l in enumerate(lines, 1) if i not in numbers))


@pytest.mark.parametrize("epochs, resumed, kept", [
    ([], 0, []),                      # fresh
    ([1, 2, 3], 3, [1, 2, 3]),        # finished
    ([1, 2, 3], 1, [1]),              # killed after epoch 3, last checkpoint epoch 1
    ([1, 2, 3, 4], 0, []),            # killed before the first checkpoint
])
def test_a_regular_log_is_cut_back_to_the_checkpoint_silently(tmp_path, epochs, resumed,
                                                              kept):
    path = write(tmp_path / "log.jsonl", epochs)
    before = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records, cut = check_resume(path, resumed, 4)
    assert [r["epoch"] for r in records] == kept and cut == (len(kept) < len(epochs))
    assert path.read_bytes() == before  # nothing written: the caller rewrites it


@pytest.mark.parametrize("epochs", [[1, 2, 3, 3, 4], [1, 2, 4], [1, 2, 4, 3], [1, 2, 3, 3]])
def test_an_irregular_tail_after_the_checkpoint_is_cut_with_one_warning(tmp_path, epochs):
    # Every record dropped is one training writes again (epochs 3..4 after checkpoint 2).
    path = write(tmp_path / "log.jsonl", epochs)
    with pytest.warns(UserWarning, match="records after epoch 2 .* repeat or skip epochs; "
                                         "cut back to the checkpoint of epoch 2"):
        records, cut = check_resume(path, 2, 4)
    assert [r["epoch"] for r in records] == [1, 2] and cut


@pytest.mark.parametrize("epochs, resumed, needles, deletable", [
    # A record beyond the run: cutting it would lose it; deleting the line is the remedy.
    ([1, 2, 3, 99], 3, ["line 4 records epoch 99, outside this run's epochs 1..3",
                        "delete line 4 of it"], [4]),
    ([1, 99, 2, 3], 3, ["line 2 records epoch 99", "delete line 2 of it"], [2]),
    ([0, 1, 2, 3], 3, ["line 1 records epoch 0", "delete line 1 of it"], [1]),
    ([1, 2, 3, 7, 8], 2, ["line 4 records epoch 7", "delete lines 4, 5 of it"], [4, 5]),
    # A gap or a repeat before the checkpoint: records training will not write again.
    ([1, 3], 3, ["epoch 2 is missing before line 2", "checkpoint of epoch 3"], None),
    ([1, 4, 5], 5, ["epochs 2..3 are missing before line 2"], None),
    ([1, 2], 3, ["ends at epoch 2, but the checkpoint of epoch 3 follows it"], None),
    ([], 2, ["ends at epoch 0, but the checkpoint of epoch 2"], None),
    ([1, 2, 1, 2], 3, ["line 3 repeats or goes back to epoch 1 after epoch 2"], None),
    ([1, 2, 2], 2, ["line 3 repeats or goes back to epoch 2 after epoch 2"], None),
    # A stray record and a gap: deleting the stray line alone would not do.
    ([1, 99, 3], 3, ["line 2 records epoch 99"], None),
])
def test_a_log_that_disagrees_with_the_run_is_refused_with_a_remedy_that_works(
        tmp_path, epochs, resumed, needles, deletable):
    path = write(tmp_path / "log.jsonl", epochs)
    before = path.read_bytes()
    with pytest.raises(WorkdirError) as e:
        check_resume(path, resumed, max(3, resumed))
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert all(n in message for n in needles), message
    assert message.endswith("rerun with --overwrite to start afresh")  # always works
    assert path.read_bytes() == before
    if deletable is None:
        assert "delete line" not in message
    else:  # following the remedy named gives a log that resumes
        delete_lines(path, deletable)
        records, _ = check_resume(path, resumed, max(3, resumed))
        assert [r["epoch"] for r in records] == list(range(1, resumed + 1))


def test_read_log_still_refuses_epochs_that_go_back(tmp_path):
    # Readers of a finished run (the OT baseline, the paper's evidence) keep the strict
    # reading; a cut last line is repaired for them too.
    path = write(tmp_path / "log.jsonl", [1, 2, 2])
    with pytest.raises(WorkdirError, match="line 3 repeats or goes back to epoch 2"):
        read_log(path)
    write_log(path, [{"epoch": 1}, {"epoch": 2}])
    path.write_bytes(path.read_bytes() + b'{"epoch": 3, "lo')
    with pytest.warns(UserWarning, match="cut off mid-write"):
        assert [r["epoch"] for r in read_log(path)] == [1, 2]
    assert path.read_bytes().count(b"\n") == 2


def test_an_epoch_that_is_not_an_integer_is_an_unreadable_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": true}\n{"epoch": 3}\n')
    with pytest.raises(WorkdirError, match="line 2 is unreadable .*--overwrite"):
        check_resume(path, 1, 3)
