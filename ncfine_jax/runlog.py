"""A run's ``log.jsonl``: read (a line cut off mid-write repaired), and checked against the
checkpoint training resumes from and the run's number of epochs.

A log of a run holds one record per completed epoch, 1, 2, ... in order; training appends
epoch E's record before it saves E's checkpoint, so the log always reaches the newest
checkpoint. On every start ``check_resume`` holds the log to that: the records up to the
checkpoint training resumes from must be exactly epochs 1..R; records after it (epochs
a killed run finished after its last checkpoint) are cut, since training writes them
again. Anything else (a gap or a repeat before R, a record beyond the run's epochs, a
record after R that training would not write again) is refused with a remedy that works;
an irregular tail that training writes again is cut with one warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ncfine_jax.errors import WorkdirError
from ncfine_jax.io import atomic_write_text
from ncfine_jax.text import squashed

_AFRESH = "rerun with --overwrite to start afresh"


def read_log_lines(path: Path, writer: bool = True) -> list[tuple[int, dict]]:
    """(line number, record) of every record of ``log.jsonl``, in file order.

    A last line cut off mid-write (no final newline, not valid JSON) is dropped with a
    warning and, when ``writer``, removed from the file. Any other unreadable line is
    one WorkdirError naming the file and line.
    """
    if not path.exists():
        return []
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise WorkdirError(f"training log {path}: unreadable ({e.strerror})") from None
    lines = raw.split(b"\n")
    entries, cut = [], False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int) \
                    or isinstance(record["epoch"], bool):
                raise ValueError("no integer 'epoch'")
        except ValueError as e:
            if number == len(lines):  # the last line, without its newline: cut mid-write
                cut = True
                break
            raise WorkdirError(f"training log {path}: line {number} is unreadable "
                               f"({squashed(e)}); {_AFRESH}") from None
        entries.append((number, record))
    if cut:
        warnings.warn(f"training log {path}: dropped a last line cut off mid-write")
        if writer:
            write_log(path, [r for _, r in entries])
    return entries


def read_log(path: Path, writer: bool = True) -> list[dict]:
    """Records of ``log.jsonl`` (``read_log_lines``), whose epochs must increase."""
    entries = read_log_lines(path, writer)
    for (_, before), (number, record) in zip(entries, entries[1:]):
        if record["epoch"] <= before["epoch"]:
            raise WorkdirError(_goes_back(path, number, record, before))
    return [r for _, r in entries]


def write_log(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _goes_back(path: Path, number: int, record: dict, before: dict) -> str:
    return (f"training log {path}: line {number} repeats or goes back to epoch "
            f"{record['epoch']} after epoch {before['epoch']}; {_AFRESH}")


def _first_problem(path: Path, entries: list[tuple[int, dict]], resumed: int,
                   epochs: int) -> str | None:
    """Why ``entries`` cannot be the log of a run of ``epochs`` epochs resumed from the
    checkpoint of epoch ``resumed`` (its start; None: it can)."""
    for i, (number, record) in enumerate(entries):
        epoch = record["epoch"]
        if not 1 <= epoch <= epochs:
            return (f"training log {path}: line {number} records epoch {epoch}, outside this "
                    f"run's epochs 1..{epochs}")
        if i and epoch <= entries[i - 1][1]["epoch"] and (i < resumed or epoch <= resumed):
            return _goes_back(path, number, record, entries[i - 1][1])
        if i < resumed and epoch != i + 1:
            gap = (f"epoch {i + 1} is" if epoch == i + 2 else f"epochs {i + 1}..{epoch - 1} are")
            return (f"training log {path}: {gap} missing before line {number}, but the "
                    f"checkpoint of epoch {resumed} comes later; {_AFRESH}")
    if len(entries) < resumed:
        last = entries[-1][1]["epoch"] if entries else 0
        return (f"training log {path}: ends at epoch {last}, but the checkpoint of epoch "
                f"{resumed} follows it; {_AFRESH}")
    return None


def check_resume(path: Path, resumed: int, epochs: int, writer: bool = True
                 ) -> tuple[list[dict], bool]:
    """The log records a run keeps when it resumes from the checkpoint of epoch
    ``resumed`` (0: from scratch), and whether the file needs rewriting to them.

    Records after ``resumed`` (all within the run's epochs) are dropped: training writes
    them again; when they were irregular (repeats, gaps) one warning says so. Nothing is
    written here (``write_log`` does, once every model of a stack was checked).

    Raises:
      WorkdirError: the log disagrees with the checkpoints or the run's epochs in a way
        cutting it back would not repair without losing a record; the line names the
        remedy (deleting the stray lines where that leaves a good log, else --overwrite).
    """
    entries = read_log_lines(path, writer)
    problem = _first_problem(path, entries, resumed, epochs)
    if problem is not None:
        stray = [(n, r) for n, r in entries if not 1 <= r["epoch"] <= epochs]
        rest = [(n, r) for n, r in entries if 1 <= r["epoch"] <= epochs]
        if stray and _first_problem(path, rest, resumed, epochs) is None:
            lines = ", ".join(str(n) for n, _ in stray)
            problem += (f"; delete line{'s' if len(stray) > 1 else ''} {lines} of it, or "
                        f"{_AFRESH}")
        elif not problem.endswith(_AFRESH):
            problem += f"; {_AFRESH}"
        raise WorkdirError(problem)
    kept, dropped = entries[:resumed], entries[resumed:]
    regular = all(r["epoch"] == resumed + 1 + i for i, (_, r) in enumerate(dropped))
    if not regular:
        warnings.warn(f"training log {path}: records after epoch {resumed} (lines "
                      f"{dropped[0][0]}..{dropped[-1][0]}) repeat or skip epochs; cut back to "
                      f"the checkpoint of epoch {resumed}, they are trained again")
    return [r for _, r in kept], bool(dropped)
