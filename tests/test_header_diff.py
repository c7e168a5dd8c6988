"""tools/header_diff.py as CI runs it: exit status, output lines, --json, --strict,
--btf, and a one-line reason when the check cannot run.

Items newer than the installed headers (tests/test_headers.py skips them) are
checked here against the running kernel's BTF.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import c_values, compiler, header_version, proc_event_align, tree

from kstructs import cn_proc
from kstructs.conformance import DEFAULT_BTF

TOOL = Path(__file__).resolve().parent.parent / "tools" / "header_diff.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False, timeout=120)


def btf_readable() -> None:
    if not os.access(DEFAULT_BTF, os.R_OK):
        pytest.skip(f"no readable {DEFAULT_BTF} (a kernel without CONFIG_DEBUG_INFO_BTF)")


def older_than_6_6() -> bool:
    return header_version() < (6, 6)


@pytest.mark.cc
@proc_event_align
def test_installed_headers_exit_0() -> None:
    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    *lines, summary = done.stdout.splitlines()
    assert summary.startswith("header_diff: conforms: ")
    assert "0 mismatches" in summary
    categories = {line.split()[0] for line in lines}
    assert categories <= {"newer", "not-mirrored"}
    newer = {line.split()[1] for line in lines if line.startswith("newer ")}
    assert ("PROC_EVENT_NONZERO_EXIT" in newer) == older_than_6_6()
    if older_than_6_6():
        assert any(line.split()[:3] == ["newer", "struct", "proc_input"] for line in lines)


@pytest.mark.cc
def test_a_changed_header_exits_1_with_the_finding(tmp_path: Path) -> None:
    include = tree(tmp_path, "linux/cn_proc.h", r"exit_code, exit_signal;", "exit_code, exit_signal, exit_extra;")
    done = run("--include-dir", str(include))
    assert done.returncode == 1
    lines = [line.split() for line in done.stdout.splitlines()]
    assert ["size", "struct", "exit_proc_event", "binding=24", "headers=28"] in lines
    assert ["offset", "struct", "exit_proc_event.parent_pid", "binding=16", "headers=20"] in lines
    grown = "missing-in-binding struct exit_proc_event.exit_extra binding=- headers=16 C value: its offset"
    assert grown.split() in lines
    assert done.stdout.splitlines()[-1].startswith("header_diff: does not conform: ")


@pytest.mark.cc
@proc_event_align
def test_a_changed_define_exits_1_with_one_line(tmp_path: Path) -> None:
    include = tree(tmp_path, "linux/connector.h", r"#define CN_IDX_PROC(\s+)0x1", r"#define CN_IDX_PROC\g<1>0x4")
    done = run("--include-dir", str(include))
    assert done.returncode == 1
    mismatched = [
        line.split() for line in done.stdout.splitlines()[:-1] if line.split()[0] not in ("newer", "not-mirrored")
    ]
    assert mismatched == [["value", "CN_IDX_PROC", "binding=1", "headers=4"]]
    assert "1 mismatches" in done.stdout.splitlines()[-1]


@pytest.mark.cc
def test_json_document(tmp_path: Path) -> None:
    include = tree(tmp_path, "linux/netlink.h", r"__u32(\s+)nlmsg_seq;", r"__u64\1nlmsg_seq;")
    done = run("--json", "--include-dir", str(include))
    assert done.returncode == 1
    doc: dict[str, Any] = json.loads(done.stdout)
    assert (doc["status"], doc["conforms"], doc["strict"]) == (1, False, False)
    (source,) = doc["sources"]
    assert source["source"] == "headers"
    assert source["linux_version"] == "{}.{}".format(*header_version())
    assert str(include) in source["description"]
    mismatches = {
        (f["category"], f["item"], f["binding"], f["c"]) for f in doc["findings"] if f["severity"] == "mismatch"
    }
    assert ("size", "struct nlmsghdr.nlmsg_seq", 4, 8) in mismatches
    assert ("offset", "struct nlmsghdr.nlmsg_pid", 12, 16) in mismatches
    # The header's new layout, from the compiler: 24 bytes where __u64 is 8-aligned, 20 on i386.
    changed = "struct changed { __u32 len; __u16 type, flags; __u64 seq; __u32 pid; }"
    size = c_values({"size": "sizeof(struct changed)"}, prelude=f"{changed};\n")["size"]
    assert ("size", "struct nlmsghdr", 16, size) in mismatches
    assert doc["counts"]["mismatch"] == len(mismatches)
    for f in doc["findings"]:
        assert set(f) == {"category", "severity", "source", "item", "binding", "c", "note"}


@pytest.mark.cc
def test_strict_fails_on_newer_items() -> None:
    done = run("--strict", "--json")
    doc = json.loads(done.stdout)
    has_newer = any(f["category"] == "newer" for f in doc["findings"])
    assert done.returncode == (1 if has_newer else 0)
    assert has_newer == older_than_6_6()


@pytest.mark.cc
@proc_event_align
def test_btf_of_the_running_kernel() -> None:
    btf_readable()
    done = run("--btf", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert [s["source"] for s in doc["sources"]] == ["headers", "btf"]
    btf_findings = [f for f in doc["findings"] if f["source"] == "btf"]
    assert {f["severity"] for f in btf_findings} <= {"info"}
    # The items the installed headers lack are in the kernel, and compared there.
    absent = {f["item"] for f in btf_findings}
    assert "struct proc_input" not in absent
    assert "struct proc_event" not in absent


@pytest.mark.cc
@proc_event_align
def test_btf_option_takes_a_path(tmp_path: Path) -> None:
    btf_readable()
    copy = tmp_path / "vmlinux"
    copy.write_bytes(Path(DEFAULT_BTF).read_bytes())
    done = run("--btf", str(copy))
    assert done.returncode == 0
    assert str(copy) in done.stdout.splitlines()[-1]


def test_no_compiler_exits_2_with_one_line() -> None:
    done = run("--cc", "no-such-cc")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "header_diff: cannot check: no C compiler: 'no-such-cc' not found\n"


@pytest.mark.cc
@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--include-dir", "/no/such/dir"], "include directory not found: /no/such/dir"),
        (["--btf", "/no/such/btf"], "cannot read BTF /no/such/btf: No such file or directory"),
    ],
    ids=["no-include-dir", "no-btf"],
)
def test_cannot_run_exits_2_with_one_line(args: list[str], reason: str) -> None:
    compiler()
    done = run(*args)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"header_diff: cannot check: {reason}\n"


@pytest.mark.cc
def test_headers_not_found_exits_2() -> None:
    done = run("--cc", f"{compiler()} -nostdinc")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "header_diff: cannot check: headers not found: linux/netlink.h\n"


@pytest.mark.cc
def test_unreadable_btf_exits_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x9f\xeb\x01\x00" + bytes(4))
    done = run("--btf", str(junk))
    assert done.returncode == 2
    assert done.stderr == f"header_diff: cannot check: unreadable BTF {junk}: BTF data too short: 0x8 bytes\n"


def test_newer_items_are_recorded() -> None:
    """The items this file relies on being 'newer' carry their version."""
    for item in ("struct proc_input", "PROC_EVENT_NONZERO_EXIT", "PROC_EVENT_ALL", "valid_event"):
        assert cn_proc.ADDED_IN[item] == "6.6"
