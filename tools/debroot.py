"""Debian roots made by debootstrap, and the mounts a chroot into one needs.

A native root gets debootstrap's two stages. A foreign one does not get the second: it runs
dpkg, every maintainer script and Python's byte compilation inside the root, so under
qemu-user (half an hour for bookworm s390x on two cores). unpack_root does instead, with host
tools, what the suite needs of it: every package the first stage fetched unpacked, base-passwd's users and groups, the
defaults base-files, libc-bin and tzdata install, the alternatives of the maintainer scripts,
the loader's cache (the root's own ldconfig, a static binary), and the root's Python modules
byte-compiled by the host's CPython when it has the root's X.Y. No dpkg database is written:
has_dpkg_database tells such a root from one dpkg installed.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Runner(Protocol):
    """Runs a command with its output appended to ``log``; its exit status."""

    def __call__(self, argv: Sequence[str | Path], log: Path, *, timeout: float = ...) -> int: ...


class SetupError(Exception):
    """A step that prepares a cell (here: a root) failed: one line, exit 2 (tools/matrix)."""


def make_root(
    path: Path,
    *,
    arch: str,
    suite: str,
    packages: Sequence[str],
    mirror: str,
    cache_dir: Path,
    log: Path,
    run: Runner,
    foreign: bool,
) -> None:
    """debootstrap ``suite`` for ``arch`` into ``path`` (minbase and ``packages``, downloads kept
    in ``cache_dir``): the first stage, then the second (``foreign``: unpack_root)."""
    # The first stage resolves the packages, downloads them and unpacks the required ones, with
    # the host's own tools.
    argv: list[str | Path] = ["debootstrap", "--foreign", "--variant=minbase", f"--arch={arch}"]
    argv += [f"--include={','.join(packages)}", f"--cache-dir={cache_dir}", suite, path, mirror]
    if run(argv, log, timeout=5400) != 0:
        raise SetupError(f"debootstrap {suite} {arch} failed")
    if foreign:
        unpack_root(path, log, run)
        return
    # The second stage runs dpkg in the root (natively here); dpkg is told not to fsync every file
    # it writes, which is most of its time on a virtual disk. A throwaway root loses nothing by it.
    unsafe = path / "etc" / "dpkg" / "dpkg.cfg.d" / "kstructs-matrix-unsafe-io"
    unsafe.parent.mkdir(parents=True, exist_ok=True)
    unsafe.write_text("force-unsafe-io\n")
    if run(["chroot", path, "/debootstrap/debootstrap", "--second-stage"], log, timeout=5400) != 0:
        raise SetupError(f"debootstrap {suite} {arch} (second stage) failed")


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in points if p.startswith(prefix)]


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    """/proc, /sys, /dev (and its submounts, as slaves) and a fresh /tmp inside ``root``."""
    done: list[Path] = []
    try:
        for kind, src, dst, opts in (
            ("proc", "proc", "proc", []),
            ("sysfs", "sysfs", "sys", []),
            (None, "/dev", "dev", ["--rbind"]),
            ("tmpfs", "tmpfs", "tmp", ["-o", "mode=1777"]),
        ):
            point = root / dst
            point.mkdir(exist_ok=True)
            argv = ["mount", *opts, src, str(point)] if kind is None else ["mount", "-t", kind, *opts, src, str(point)]
            if subprocess.run(argv, check=False).returncode != 0:
                raise SetupError(f"cannot mount {src} on {point}")
            done.append(point)
            if kind is None:
                subprocess.run(["mount", "--make-rslave", str(point)], check=False)
        yield
    finally:
        for point in reversed(done):
            subprocess.run(["umount", "-R", "-l", str(point)], check=False)


# --- a foreign root, finished by the host ---------------------------------------------------------


def has_dpkg_database(path: Path) -> bool:
    """Whether dpkg installed the root at ``path`` (debootstrap's second stage): its status file
    lists packages. A root unpacked by unpack_root keeps the first stage's empty one."""
    status = path / "var" / "lib" / "dpkg" / "status"
    return status.exists() and status.stat().st_size > 0


def installed_packages(status: str) -> set[str]:
    """The packages a dpkg status file (``var/lib/dpkg/status``) says are installed: each
    paragraph's ``Package`` whose ``Status`` is ``install ok installed``."""
    out = set()
    for paragraph in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and line[:1] != " ")
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            out.add(fields["Package"])
    return out


def deb_paths(debpaths: str) -> list[str]:
    """The packages debootstrap's first stage fetched, from its debootstrap/debpaths ("PACKAGE
    PATH" a line, PATH inside the root): the paths, in its order."""
    out = []
    for line in debpaths.splitlines():
        fields = line.split()
        if len(fields) != 2 or not fields[1].endswith(".deb"):
            raise SetupError(f"debootstrap/debpaths: unexpected line {line!r}")
        out.append(fields[1])
    return out


def deb_python(paths: Sequence[str]) -> tuple[int, int] | None:
    """The CPython X.Y a root gets, from the file name of its pythonX.Y-minimal package."""
    for path in paths:
        found = re.fullmatch(r"python3\.(\d+)-minimal_[^/]*\.deb", path.rsplit("/", 1)[-1])
        if found:
            return 3, int(found.group(1))
    return None


def native_bytecode(root: tuple[int, int] | None, host: tuple[int, int]) -> bool:
    """Whether the host's interpreter may byte-compile a root's Python modules: a .pyc holds no
    byte-order-dependent data, and its format (the magic number) changes only with X.Y."""
    return root == host


@dataclass(frozen=True)
class Alternative:
    """One ``update-alternatives --install`` of a maintainer script, its slaves' links included."""

    name: str
    path: str
    priority: int
    links: tuple[tuple[str, str, str], ...]  # (link, name, path): the master first


_INSTALL = re.compile(r"--install\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)((?:\s+--slave\s+\S+\s+\S+\s+\S+)*)")
_SLAVE = re.compile(r"--slave\s+(\S+)\s+(\S+)\s+(\S+)")


def script_alternatives(script: str) -> list[Alternative]:
    """The alternatives a maintainer script installs, from its literal update-alternatives calls
    (shell comments dropped, continued lines joined; one with a variable in it is left out)."""
    lines = [line.split("#", 1)[0] if line.lstrip().startswith("#") else line for line in script.splitlines()]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for call in re.finditer(r"update-alternatives\b[^\n]*", text):
        for m in _INSTALL.finditer(call.group(0)):
            link, name, path, priority, slaves = m.groups()
            links = [(link, name, path)] + [(s[1], s[2], s[3]) for s in _SLAVE.finditer(slaves)]
            if not any("$" in part for entry in links for part in entry):
                out.append(Alternative(name, path, int(priority), tuple(links)))
    return out


def best_alternatives(found: Sequence[Alternative], exists: Callable[[str], bool]) -> list[Alternative]:
    """update-alternatives' automatic mode: of each name, the highest priority whose path exists."""
    best: dict[str, Alternative] = {}
    for alt in found:
        if exists(alt.path) and (alt.name not in best or alt.priority > best[alt.name].priority):
            best[alt.name] = alt
    return list(best.values())


def unpack_root(path: Path, log: Path, run: Runner) -> None:
    """Finish the first-stage root at ``path`` (see the module's docstring); ``run`` runs each
    command with its output in ``log``. Foreign binaries run only for ldconfig, so binfmt_misc
    must know the root's architecture."""
    paths = deb_paths((path / "debootstrap" / "debpaths").read_text())
    alternatives: list[Alternative] = []
    begin = time.monotonic()
    for name in paths:
        deb = path / name.lstrip("/")
        # Into the merged-/usr root the first stage made: /bin and friends stay symlinks; owners
        # by number, as dpkg leaves them (base-passwd's ids are fixed).
        tar = f"tar -x --keep-directory-symlink --numeric-owner -C {shlex.quote(str(path))} -f -"
        unpack = f"dpkg-deb --fsys-tarfile {shlex.quote(str(deb))} | {tar}"
        if run(["bash", "-o", "pipefail", "-ec", unpack], log) != 0:
            raise SetupError(f"unpacking {deb.name} failed")
        postinst = subprocess.run(["dpkg-deb", "--info", deb, "postinst"], capture_output=True, check=False)
        if postinst.returncode == 0:
            alternatives += script_alternatives(postinst.stdout.decode(errors="replace"))
        deb.unlink()  # a copy of the one in debootstrap's --cache-dir
    _note(log, f"{len(paths)} packages unpacked natively in {time.monotonic() - begin:.0f} s")
    # debootstrap left /proc a symlink to the host's, for its second stage to replace: a mount
    # there would cover the host's own.
    if (path / "proc").is_symlink():
        (path / "proc").unlink()
        (path / "proc").mkdir()
    etc = path / "etc"
    for src, dst in (
        ("usr/share/base-passwd/passwd.master", "etc/passwd"),  # base-passwd's preinst
        ("usr/share/base-passwd/group.master", "etc/group"),
        ("usr/share/base-files/profile", "etc/profile"),  # base-files' postinst
        ("usr/share/base-files/dot.profile", "root/.profile"),
        ("usr/share/base-files/dot.bashrc", "root/.bashrc"),
        ("usr/share/libc-bin/nsswitch.conf", "etc/nsswitch.conf"),  # libc-bin's postinst
    ):
        if (path / src).exists() and not (path / dst).exists():
            shutil.copy2(path / src, path / dst)
    if (path / "usr/share/zoneinfo/Etc/UTC").exists() and not (etc / "localtime").is_symlink():
        (etc / "localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")  # tzdata's, asked nothing
        (etc / "timezone").write_text("Etc/UTC\n")
    for alt in best_alternatives(alternatives, lambda p: (path / p.lstrip("/")).exists()):
        for link, name, target in alt.links:
            if (path / target.lstrip("/")).exists():
                (etc / "alternatives" / name).unlink(missing_ok=True)
                (etc / "alternatives" / name).symlink_to(target)
                (path / link.lstrip("/")).unlink(missing_ok=True)
                (path / link.lstrip("/")).symlink_to(f"/etc/alternatives/{name}")
    # libc-bin's trigger: the root's own ldconfig (a static binary, a second under qemu-user).
    if run(["chroot", path, "/sbin/ldconfig"], log) != 0:
        raise SetupError("ldconfig in the root failed")
    python = deb_python(paths)
    if python is not None and native_bytecode(python, sys.version_info[:2]):
        # What py3compile does in the maintainer scripts, with the names the root sees. A module
        # that does not compile (test data) stays source, as there.
        dirs = [path / "usr" / "lib" / f"python3.{python[1]}", path / "usr" / "lib" / "python3" / "dist-packages"]
        compile_all: list[str | Path] = [sys.executable, "-m", "compileall", "-q", "-j", "0"]
        compile_all += ["--invalidation-mode", "timestamp", "-s", path, "-p", "/", *dirs]
        begin = time.monotonic()
        code = run(compile_all, log)
        _note(log, f"byte-compiled natively in {time.monotonic() - begin:.0f} s (exit {code})")
    else:
        found = "none" if python is None else f"3.{python[1]}"
        _note(log, f"the root's Python is {found}, the host's {sys.version.split()[0]}: no bytecode")
    shutil.rmtree(path / "debootstrap")


def _note(log: Path, text: str) -> None:
    with log.open("a") as out:
        out.write(f"matrix: {text}\n")
