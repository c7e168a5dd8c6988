"""tools/matrix's verdicts (which rows of its table count as passed) and tools/debroot's parsing
and decisions (no root, nothing set up)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"kstructs_{name}_under_test", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def matrix() -> ModuleType:
    return _load("matrix")


@pytest.fixture(scope="module")
def debroot() -> ModuleType:
    return _load("debroot")


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        ("passed", True),
        ("passed: 916 facts, 0 mismatches, 6 newer, 4 not mirrored", True),  # a check's row
        ("not available", True),
        ("FAILED (mismatch): 916 facts, 1 mismatches", False),
        ("FAILED (exit 1)", False),
        ("setup failed", False),
        ("not run", False),
        ("no pytest summary (exit 2)", False),
    ],
)
def test_which_rows_pass(matrix: ModuleType, status: str, ok: bool) -> None:
    assert matrix.Row("cell", "what", status=status).ok is ok


# debootstrap 1.0.128's debootstrap/debpaths after `--foreign` (lines of a bookworm s390x root).
DEBPATHS = """adduser /var/cache/apt/archives/adduser_3.134_all.deb
base-passwd /var/cache/apt/archives/base-passwd_3.6.1_s390x.deb
libpython3.11-minimal /var/cache/apt/archives/libpython3.11-minimal_3.11.2-6+deb12u8_s390x.deb
python3.11-minimal /var/cache/apt/archives/python3.11-minimal_3.11.2-6+deb12u8_s390x.deb
python3-minimal /var/cache/apt/archives/python3-minimal_3.11.2-1+b1_s390x.deb
zlib1g /var/cache/apt/archives/zlib1g_1%3a1.2.13.dfsg-1_s390x.deb
"""


def test_deb_paths_are_the_second_field_in_order(debroot: ModuleType) -> None:
    paths = debroot.deb_paths(DEBPATHS)
    assert paths[0] == "/var/cache/apt/archives/adduser_3.134_all.deb"
    assert paths[-1] == "/var/cache/apt/archives/zlib1g_1%3a1.2.13.dfsg-1_s390x.deb"
    assert len(paths) == 6


@pytest.mark.parametrize("line", ["adduser", "adduser /var/cache/apt/archives/adduser_3.134_all.deb extra", "a b.tar"])
def test_deb_paths_refuse_a_line_of_another_shape(debroot: ModuleType, line: str) -> None:
    with pytest.raises(debroot.SetupError, match="debpaths"):
        debroot.deb_paths(line + "\n")


def test_the_roots_python_comes_from_its_minimal_package(debroot: ModuleType) -> None:
    paths = debroot.deb_paths(DEBPATHS)
    assert debroot.deb_python(paths) == (3, 11)
    # libpython3.11-minimal and python3-minimal are not the interpreter's package
    assert debroot.deb_python([p for p in paths if "/python3.11-minimal_" not in p]) is None
    assert debroot.deb_python(["/var/cache/apt/archives/python3.13-minimal_3.13.9-1_i386.deb"]) == (3, 13)


@pytest.mark.parametrize(
    ("root", "host", "native"),
    [((3, 11), (3, 11), True), ((3, 11), (3, 12), False), ((3, 13), (3, 11), False), (None, (3, 11), False)],
)
def test_bytecode_is_made_natively_only_for_the_same_python(
    debroot: ModuleType, root: tuple[int, int] | None, host: tuple[int, int], native: bool
) -> None:
    assert debroot.native_bytecode(root, host) is native


# gcc 4:12.2.0-3's postinst (bookworm), as shipped: a slave commented out inside a continued command.
GCC_POSTINST = r"""#!/bin/sh
set -e

update-alternatives --quiet \
    --install /usr/bin/cc cc /usr/bin/gcc 20 \
    #--slave /usr/share/man/man1/cc.1.gz cc.1.gz /usr/share/man/man1/gcc.1.gz

update-alternatives --quiet \
    --install /usr/bin/c89 c89 /usr/bin/c89-gcc 20 \
    --slave /usr/share/man/man1/c89.1.gz c89.1.gz /usr/share/man/man1/c89-gcc.1.gz

# update-alternatives --install /usr/bin/f77 f77 /usr/bin/g77 10
update-alternatives --install /usr/bin/$tool $tool /usr/bin/$tool.x 5
"""


def test_alternatives_of_a_maintainer_script(debroot: ModuleType) -> None:
    found = debroot.script_alternatives(GCC_POSTINST)
    assert [(a.name, a.path, a.priority, a.links) for a in found] == [
        ("cc", "/usr/bin/gcc", 20, (("/usr/bin/cc", "cc", "/usr/bin/gcc"),)),
        (
            "c89",
            "/usr/bin/c89-gcc",
            20,
            (
                ("/usr/bin/c89", "c89", "/usr/bin/c89-gcc"),
                ("/usr/share/man/man1/c89.1.gz", "c89.1.gz", "/usr/share/man/man1/c89-gcc.1.gz"),
            ),
        ),
    ]


def test_the_best_alternative_is_the_highest_priority_that_exists(debroot: ModuleType) -> None:
    def alt(path: str, priority: int) -> object:
        return debroot.Alternative("pager", path, priority, (("/usr/bin/pager", "pager", path),))

    more, less, most = alt("/bin/more", 50), alt("/usr/bin/less", 77), alt("/usr/bin/most", 90)
    assert debroot.best_alternatives([more, less, most], lambda p: p != "/usr/bin/most") == [less]
    assert debroot.best_alternatives([more, less], lambda p: p == "/bin/more") == [more]
    assert debroot.best_alternatives([more], lambda p: False) == []


def test_a_dpkg_database_is_a_status_file_that_lists_packages(debroot: ModuleType, tmp_path: Path) -> None:
    assert debroot.has_dpkg_database(tmp_path) is False
    status = tmp_path / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text("")  # what debootstrap's first stage leaves
    assert debroot.has_dpkg_database(tmp_path) is False
    status.write_text("Package: dash\nStatus: install ok installed\n")
    assert debroot.has_dpkg_database(tmp_path) is True


# Two paragraphs of a real status file (bookworm armhf), trimmed, and one removed package.
STATUS = """Package: python3-pytest
Status: install ok installed
Priority: optional
Architecture: all
Description: Simple, powerful testing in Python3
 This is the Python 3 version.
 Package: not-a-field

Package: python3-pyte
Status: deinstall ok config-files
Architecture: all

Package: gcc
Status: install ok installed
Architecture: armhf
"""


def test_installed_packages_are_those_dpkg_says_are_installed(debroot: ModuleType) -> None:
    assert debroot.installed_packages(STATUS) == {"python3-pytest", "gcc"}
    assert debroot.installed_packages("") == set()


def test_a_stamp_keeps_only_the_packages_that_are_there(matrix: ModuleType) -> None:
    stamp = ["armhf", "bookworm", "python3-pytest", "python3-pyte", "gcc"]
    assert matrix.present(stamp, {"python3-pytest", "gcc"}) == ["armhf", "bookworm", "python3-pytest", "gcc"]
    assert matrix.present(stamp, set()) == ["armhf", "bookworm"]
