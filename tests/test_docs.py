"""The documentation cannot rot: README.md and docs/ are checked against the code.

- every relative link and ``#anchor`` resolves (anchors as a code host makes them from
  headings);
- every command in a ``bash`` code block, and every command quoted inline in the prose,
  that runs a project script or module parses with that script's own argument parser (an
  unknown flag or a bad choice fails), ``make`` targets exist, and every repository path a
  command names exists;
- every figure a page shows exists, is listed in ``docs/figures/sources.json`` and the page
  names the command that produces it.

Code blocks marked ``text`` hold synopses with placeholders (``[--flag]``, ``{a,b}``) and
are not run; ``bash`` blocks hold commands that work when pasted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import runpy
import shlex
import sys
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").rglob("*.md")])
FIGURE_SOURCES = REPO / "docs" / "figures" / "sources.json"
# Where a command may name a file of the repository.
REPO_DIRS = ("experiments/", "benchmarks/", "examples/", "docs/", "ncfine_jax/", "tests/",
             ".ci/")
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```(\w*)\s*$")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---------------------------------------------------------------------------- markdown


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        m = _FENCE.match(line.strip())
        if lang is None and m:
            lang, body = m.group(1) or "", []
        elif lang is not None and line.strip() == "```":
            blocks.append((lang, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def prose(text: str) -> str:
    """The page without its fenced code blocks."""
    out, inside = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()) or (inside and line.strip() == "```"):
            inside = not inside
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """The anchor a code host (GitHub) gives a heading: lower case, markup and punctuation
    dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines():
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[bool, str]]:
    """(is_image, target) of every Markdown link outside code blocks."""
    return [(bang == "!", target) for bang, _, target in _LINK.findall(prose(path.read_text()))]


def commands(path: Path) -> list[str]:
    """Every command line of the page's bash code blocks, continuation lines joined,
    comments dropped."""
    out = []
    for lang, body in code_blocks(path.read_text()):
        if lang not in ("bash", "sh", "shell"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(shlex.join(words))
    return out


def inline_commands(path: Path) -> list[str]:
    """Commands quoted in the prose as inline code (``python experiments/x.py ...``,
    ``python -m ncfine_jax.y ...``, ``make ...``)."""
    spans = re.findall(r"`([^`\n]+)`", prose(path.read_text()))
    runs = [s for s in spans if re.match(r"(python3? (experiments|benchmarks|examples)/|"
                                         r"python3? -m ncfine_jax|make [a-z])", s)]
    # A bare "python -m ncfine_jax.analyze" names the command; only one with flags is a call.
    return [s for s in runs if len(s.split()) > (3 if " -m " in s else 2)]


def all_commands() -> list[tuple[str, str]]:
    return [(rel(p), c) for p in PAGES for c in [*commands(p), *inline_commands(p)]]


# ---------------------------------------------------------------------------- commands


class _Parsed(BaseException):
    """Raised by the patched parse_args once a command's flags have parsed."""


def python_call(words: list[str]) -> list[str] | None:
    """The arguments after ``python`` in a command (``["-m", "mod", ...]`` or
    ``["script.py", ...]``), or None when the command runs no Python."""
    for i, w in enumerate(words):
        if re.fullmatch(r"(\S*/)?python3?(\.\d+)?", w):
            return words[i + 1:]
    return None


def make_call(words: list[str]) -> tuple[list[str], dict] | None:
    if not words or words[0] != "make":
        return None
    targets = [w for w in words[1:] if "=" not in w]
    variables = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return targets, variables


def parse_python(args: list[str]) -> str | None:
    """Parse ``python ARGS`` with the script's or module's own parser, in this process;
    returns the parser's error output, or None when the flags parsed."""
    if not args:
        return "no script or module"
    if args[0] == "-c":
        try:
            compile(args[1], "<command>", "exec")
        except SyntaxError as e:
            return f"python -c: {e}"
        return None
    if args[0] == "-m":
        module, argv, run = args[1], args[2:], runpy.run_module
        target = module
    else:
        script = REPO / args[0]
        if not script.is_file():
            return f"{args[0]}: no such script"
        if script.suffix != ".py":
            return None  # shell scripts: their path is checked, not their flags
        module, argv, run = str(script), args[1:], runpy.run_path
        target = str(script)
    if module == "ncfine_jax.launch" and "--" in argv:  # the launcher's own flags
        argv = argv[:argv.index("--")]
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed()

    err = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), \
            mock.patch.object(sys, "argv", [target, *argv]), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run(target, run_name="__main__")
        except _Parsed:
            return None
        except SystemExit as e:
            return f"exit {e.code}: {err.getvalue().strip()}"
    return "the command never parsed its flags"


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.MULTILINE))


def check_command(command: str) -> list[str]:
    """Problems of one documented command (empty when it is fine)."""
    words = shlex.split(command)
    problems = []
    for w in words:
        if re.search(r"^\[|\]$|^\{.*,.*\}$|^\.\.\.$", w):
            problems.append(f"placeholder {w!r} in a command (synopses go in text blocks)")
    for w in words:
        path = w.split("=", 1)[-1]
        if path.startswith(REPO_DIRS) and not any(c in path for c in "*<>"):
            if not (REPO / path).exists():
                problems.append(f"{path}: no such file in the repository")
    make = make_call(words)
    if make is not None:
        targets, variables = make
        missing = [t for t in targets if t not in makefile_targets()]
        problems += [f"make {t}: no such target" for t in missing]
        if "RUN_ARGS" in variables and "run" in targets:
            error = parse_python(["experiments/coarse_cifar10.py",
                                  *shlex.split(variables["RUN_ARGS"])])
            if error:
                problems.append(error)
        return problems
    args = python_call(words)
    if args is not None:
        if args and args[0] == "-m" and args[1] == "ncfine_jax.launch" and "--" in args:
            inner = args[args.index("--") + 1:]
            error = parse_python(inner)
            if error:
                problems.append(f"launched command: {error}")
        error = parse_python(args)
        if error:
            problems.append(error)
    return problems


# ---------------------------------------------------------------------------- tests


def test_every_page_is_found():
    names = {rel(p) for p in PAGES}
    assert {"README.md", "docs/usage.md", "docs/design.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_links_and_anchors_resolve(page):
    problems = []
    for _, target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading with anchor #{anchor} in {rel(file)}")
    assert not problems, f"{rel(page)}: " + "; ".join(problems)


@pytest.mark.parametrize("page, command", all_commands(), ids=lambda x: x[:60])
def test_documented_command_parses(page, command):
    problems = check_command(command)
    assert not problems, f"{page}: `{command}`: " + "; ".join(problems)


def test_every_shown_figure_exists_and_names_its_command():
    sources = json.loads(FIGURE_SOURCES.read_text())
    shown = set()
    problems = []
    for page in PAGES:
        page_commands = {" ".join(shlex.split(c)) for c in commands(page)}
        for is_image, target in links(page):
            if not is_image or re.match(r"^[a-z]+:", target):
                continue
            path = (page.parent / target).resolve()
            name = rel(path) if path.is_relative_to(REPO) else target
            shown.add(name)
            if not path.exists():
                problems.append(f"{rel(page)}: {target}: no such figure")
                continue
            source = sources.get(name)
            if source is None:
                problems.append(f"{rel(page)}: {name} is not in {rel(FIGURE_SOURCES)}")
            elif " ".join(shlex.split(source["command"])) not in page_commands:
                problems.append(f"{rel(page)}: shows {name} but does not name its command "
                                f"`{source['command']}` in a bash block")
    on_disk = {rel(p) for p in (REPO / "docs").rglob("*.png")}
    problems += [f"{n}: in docs but shown on no page" for n in sorted(on_disk - shown)]
    problems += [f"{n}: in {rel(FIGURE_SOURCES)} but not on disk" for n in sorted(sources)
                 if not (REPO / n).exists()]
    assert not problems, "\n".join(problems)


def test_figure_sources_name_outputs_of_their_commands():
    """Each figure's recorded output lies under a folder its command names (its --workdir,
    --out or output root) and has the file name the project gives that figure."""
    from ncfine_jax import workdir as wdir
    from ncfine_jax.paper.figures import FIGURE_FILES

    names = {*wdir.RUN_FIGURES, wdir.GRID_BARS_FIGURE, wdir.GRID_HEATMAPS_FIGURE,
             *FIGURE_FILES, "width_study.png"}
    sources = json.loads(FIGURE_SOURCES.read_text())
    problems = []
    for figure, source in sources.items():
        words = shlex.split(source["command"])
        output = source["output"]
        if not any(output.startswith(w.rstrip("/") + "/") for w in words):
            problems.append(f"{figure}: {output} is not under a folder its command names")
        name = Path(output).name
        if name not in names and not re.fullmatch(r"gaussian_mixture_\w+\.png", name):
            problems.append(f"{figure}: {name} is not a figure the project writes")
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A bad flag, a bad choice, a missing script and a placeholder are caught; a good
    command passes; a broken anchor is found."""
    assert check_command("python experiments/coarse_digits.py --epochs 3") == []
    assert check_command("python experiments/coarse_digits.py --no-such-flag 3")
    assert check_command("python experiments/paper.py --scale huge --workdir d")
    assert check_command("python experiments/no_such_script.py")
    assert check_command("python -m ncfine_jax.analyze F.npz [--num-coarse C] --out d")
    assert check_command("make no-such-target")
    assert check_command('make run RUN_ARGS="--lr 0.01 --bogus"')
    page = tmp_path / "p.md"
    page.write_text("# A `b` c\n\n[x](#a-b-c) [y](#nope)\n")
    assert "a-b-c" in anchors(page) and "nope" not in anchors(page)


def test_the_documented_default_workdir_is_the_one_its_command_gets():
    from ncfine_jax.experiment import EXPERIMENTS, default_workdir
    from ncfine_jax.experiment.cli import build_parser
    from ncfine_jax.experiment.config import config_from_args

    page = REPO / "docs" / "usage.md"
    documented = re.search(r"`(runs/coarse_cifar10/lr0\.05_[^`]+)`", page.read_text()).group(1)
    command = next(c for c in commands(page) if "--subset 2500,1000" in c)
    spec = EXPERIMENTS["coarse_cifar10"]
    args = build_parser(spec).parse_args(shlex.split(command)[2:])
    assert str(default_workdir(config_from_args(spec.defaults, args), spec.defaults)) == documented


def test_the_library_page_lists_every_label_kind_and_backbone():
    from ncfine_jax.labels import KINDS
    from ncfine_jax.models import BACKBONES

    text = (REPO / "docs" / "library.md").read_text()
    assert [k for k in KINDS if f"`{k}`" not in text] == []
    assert [b for b in BACKBONES if not re.search(rf"\b{b.rstrip('0123456789')}", text)] == []
