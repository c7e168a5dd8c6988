"""The documentation's shell sessions, run; the version and the changelog.

The Python sessions (```pycon blocks) of README.md and docs/*.md are doctests that
pytest collects itself (``--doctest-glob``). The shell sessions (```console blocks)
run here: each ``$ `` line in bash, in one fresh directory per page with the
checkout's ``tools/`` linked into it, and what it prints (stdout and stderr) must
match the lines under it, ``...`` standing for anything; ``$ echo $?`` checks the
previous command's exit status.
"""

from __future__ import annotations

import doctest
import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import compiler, header_version, proc_event_align

import kstructs

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Step:
    """One ``$ command`` of a console block and the output printed under it."""

    line: int
    command: str
    expected: str


def steps(text: str) -> list[Step]:
    """The console steps of a Markdown page, in page order."""
    found: list[Step] = []
    for block in FENCE.finditer(text):
        if block.group(1) != "console":
            continue
        first = text.count("\n", 0, block.start(2)) + 1
        for n, line in enumerate(block.group(2).splitlines(keepends=True), first):
            if line.startswith("$ "):
                found.append(Step(n, line[2:].strip(), ""))
            elif found:
                found[-1] = Step(found[-1].line, found[-1].command, found[-1].expected + line)
            else:
                raise AssertionError(f"line {n}: a console block starts with output, not a '$ ' command")
    return found


SESSIONS = {page: steps(page.read_text()) for page in PAGES}


def needs_cc(command: str) -> bool:
    return "header_diff" in command or "kstructs check" in command


def checks_the_binding(command: str) -> bool:
    """A command whose output is the project's own check (which proc_event's alignment changes
    where ctypes cannot express it)."""
    return "header_diff" in command or "kstructs check kstructs." in command


def marks(session: list[Step]) -> list[pytest.MarkDecorator]:
    found = []
    if any("kstructs watch" in s.command for s in session):
        found.append(pytest.mark.root)
    if any(needs_cc(s.command) for s in session):
        found.append(pytest.mark.cc)
    if any(checks_the_binding(s.command) for s in session):
        found.append(proc_event_align)
    return found


def on_this_kernel(expected: str) -> str:
    """The documented output is Linux 6.6's and later's; before 6.6 the kernel
    ignores struct proc_input, and watch's summary says where it filtered."""
    major, minor = (int(re.match(r"\d+", part).group()) for part in os.uname().release.split(".")[:2])  # type: ignore[union-attr]
    if (major, minor) < (6, 6):
        return expected.replace("filtered in the kernel", "filtered in user space")
    return expected


def documented_headers(session: list[Step]) -> tuple[int, int] | None:
    """The Linux version of the UAPI headers a page's checks were run against, from their output."""
    shown = re.compile(r"against Linux (\d+)\.(\d+) headers")
    found = {(int(a), int(b)) for s in session for a, b in shown.findall(s.expected)}
    assert len(found) <= 1, f"a page shows checks against several header versions: {sorted(found)}"
    return found.pop() if found else None


# pycon: doctests; console: run here; sh: commands to type; text: a live stream or a synopsis.
KINDS = {"pycon", "console", "sh", "text"}


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_block_is_run_or_says_why_not(page: Path) -> None:
    text = page.read_text()
    for block in FENCE.finditer(text):
        line = text.count("\n", 0, block.start()) + 1
        assert block.group(1) in KINDS, f"{page.name}:{line}: a ```{block.group(1)} block is neither run nor text"
        if block.group(1) == "pycon":
            assert block.group(2).startswith(">>> "), f"{page.name}:{line}: a pycon block is a >>> session"


def test_steps_reads_commands_output_and_lines() -> None:
    text = "intro\n```console\n$ echo hi\nhi\n$ echo $?\n0\n```\n```sh\n$ not run\n```\n"
    assert steps(text) == [Step(3, "echo hi", "hi\n"), Step(5, "echo $?", "0\n")]


@pytest.mark.parametrize(
    "page",
    [pytest.param(page, marks=marks(session), id=page.name) for page, session in SESSIONS.items() if session],
)
def test_console(page: Path, tmp_path: Path) -> None:
    session = SESSIONS[page]
    if any(needs_cc(s.command) for s in session):
        compiler()  # skips without one (fails under CI)
        shown, have = documented_headers(session), header_version()
        if shown is not None and shown != have:
            pytest.skip(
                f"{page.name} shows checks against Linux {shown[0]}.{shown[1]} headers; "
                f"the installed ones are Linux {have[0]}.{have[1]}"
            )
    (tmp_path / "tools").symlink_to(ROOT / "tools")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    checker = doctest.OutputChecker()
    status = 0
    for step in session:
        if step.command == "echo $?":
            got = f"{status}\n"
        else:
            done = subprocess.run(
                ["bash", "-c", step.command],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
                check=False,
            )
            status, got = done.returncode, done.stdout
        expected = on_this_kernel(step.expected)
        assert checker.check_output(expected, got, doctest.ELLIPSIS), (
            f"{page.name}:{step.line}: $ {step.command}\nexpected:\n{expected}got:\n{got}"
        )


def test_version_is_the_installed_metadata() -> None:
    # pyproject.toml reads the version from kstructs.__version__ (dynamic = ["version"]).
    assert importlib.metadata.version("kstructs") == kstructs.__version__


def test_changelog_has_unreleased_and_the_current_version() -> None:
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert kstructs.__version__ in headings
