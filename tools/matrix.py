#!/usr/bin/env python3
"""The support matrix: the project proven on every Linux ABI, CPython and kernel it claims.

    tools/matrix [--lean] [--only CELL]... [--list] [--jobs N] [--cache DIR]

Run as root on a Debian (bookworm or newer) amd64 machine. Everything comes from
Debian packages (and the test runner from PyPI for the pyenv interpreters); what
is set up is kept under /var/cache/kstructs-matrix (--cache DIR or
$KSTRUCTS_MATRIX_CACHE to use another) and reused by the next run. On a fresh
machine the Debian roots are made with debootstrap while the checks run. A foreign
root (s390x, armhf) gets debootstrap's first stage only; the host finishes it
(tools/debroot.py: dpkg-deb, and the host's CPython for the bytecode), so that no dpkg
and no maintainer script runs under qemu-user (a minute instead of half an hour). Such
a root has no dpkg database: a package added to its list makes it anew.

Cells:
  check:TRIPLE   compile-only layout check of the whole binding with TRIPLE-gcc and
                 that target's headers (``kstructs check --target``), 7 targets
  abi:i386       the root-free suite in a Debian bookworm i386 root, natively (chroot)
  abi:s390x      the same in a bookworm s390x root (big-endian) under qemu-user; with
                 --lean only the byte-order files: tests/test_netlink.py, test_connector.py,
                 test_cn_proc.py, test_headers.py (layouts), test_events.py, test_stream.py
                 (parser, encoders), test_elf.py, test_btf.py (ELF and BTF readers) and
                 test_check.py (the checker)
  abi:armhf      the root-free suite in a bookworm armhf root under qemu-user
  abi:i386-3.13  the same in a sid i386 root with python3.13, where ctypes honours _align_
  kernel:6.1     the root suite (tests marked root: the kernel's side) on Debian bookworm's
                 own kernel booted with qemu-system-x86_64 (KVM when it can run it, else TCG)
  python:X.Y.Z   the whole suite, as root, on each pyenv CPython >= 3.11 and on the
                 python3.13/python3.14 of a Debian sid root (chroot)

Every cell runs pytest on the project's wheel (its metadata and its kstructs command),
built once per run, with the source tree first on the path. Under qemu-user a test may
take 30 minutes before the run stops with its stack (pytest-timeout), and one slower
than 5 minutes has its stack printed (faulthandler_timeout).

--lean (what CI runs) takes the seven checks, abi:i386, abi:s390x (the byte-order
files), kernel:6.1 and the newest Python. binfmt_misc is mounted if it is not, and
qemu-user registered under names of our own; both are undone at the end, as is every
mount. A summary table closes the run.

Exit status: 0 every cell passed (a check whose command is not available yet counts
as not run), 1 at least one cell failed, 2 setup failed (one line on stderr per
failed step: a package, a root, the wheel, binfmt_misc).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))  # run as a script (tools/matrix), its sibling is tools.debroot

from tools import debroot  # noqa: E402
from tools.debroot import SetupError  # noqa: E402

#: Where setup is kept between runs (--cache DIR or KSTRUCTS_MATRIX_CACHE); see use_cache.
DEFAULT_CACHE = Path("/var/cache/kstructs-matrix")
CACHE = DEFAULT_CACHE
ROOTS = CACHE / "roots"
LOGS = CACHE / "logs"
MIRROR = "http://deb.debian.org/debian"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
MODULES = ("kstructs.netlink", "kstructs.connector", "kstructs.cn_proc")

#: The seven ABIs Debian ships cross compilers for, by GNU triple, with their packages.
TARGETS = {
    "x86_64-linux-gnu": "gcc",
    "i686-linux-gnu": "gcc-i686-linux-gnu",
    "aarch64-linux-gnu": "gcc-aarch64-linux-gnu",
    "arm-linux-gnueabihf": "gcc-arm-linux-gnueabihf",
    "powerpc64le-linux-gnu": "gcc-powerpc64le-linux-gnu",
    "riscv64-linux-gnu": "gcc-riscv64-linux-gnu",
    "s390x-linux-gnu": "gcc-s390x-linux-gnu",
}
HOST_PACKAGES = ("debootstrap", "qemu-user-static", "qemu-system-x86", "e2fsprogs", "git", "util-linux")
#: What the suite needs inside a Debian root: the interpreter, the runner and a C compiler.
#: (The VM root takes exactly these; the test roots add TEST_PACKAGES.)
ROOT_PACKAGES = (
    "python3",
    "python3-pytest",
    "python3-hypothesis",
    "python3-pyte",
    "gcc",
    "libc6-dev",
    "linux-libc-dev",
)
#: The per-test time limit of pyproject.toml, in the test roots too.
TEST_PACKAGES = ("python3-pytest-timeout",)
#: The same from PyPI for the pyenv interpreters (the dev dependency group, less the linters).
PIP_PACKAGES = ("pytest>=8", "hypothesis>=6.100", "pyte>=0.8", "pytest-timeout>=2.2")
#: Under qemu-user everything runs 10 to 30 times slower: a test may take this long before the
#: run stops with every thread's stack (pytest-timeout), and past SLOW_REPORT its stack is
#: printed while it goes on (pytest's faulthandler_timeout).
EMULATED_TEST_TIMEOUT = 1800
EMULATED_SLOWDOWN = 10
SLOW_REPORT = 300
#: The big-endian cell of the lean run (--lean) runs these test files only: the parser, the
#: encoders, the layouts, the ELF and BTF readers and the checker's byte-order handling, the
#: parts whose results depend on the byte order. The full run takes the whole root-free suite.
BIG_ENDIAN_LEAN = (
    "tests/test_netlink.py",
    "tests/test_connector.py",
    "tests/test_cn_proc.py",
    "tests/test_headers.py",
    "tests/test_events.py",
    "tests/test_stream.py",
    "tests/test_elf.py",
    "tests/test_btf.py",
    "tests/test_check.py",
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VM_TIMEOUT = 3600
#: A pytest plugin loaded in every cell: Hypothesis without its timing checks (deadline,
#: too_slow), which emulated and loaded machines fail for being slow, not wrong.
PLUGIN = "kstructs_matrix_profile"
PLUGIN_SOURCE = """from hypothesis import HealthCheck, settings

settings.register_profile("matrix", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("matrix")
"""
SUITE_TIMEOUT = 3600


@dataclass(frozen=True)
class Root:
    """A Debian root made by debootstrap."""

    name: str
    arch: str
    suite: str
    extra: tuple[str, ...] = ()
    qemu: str | None = None  # the qemu-user binfmt entry it needs (/usr/lib/binfmt.d/qemu-NAME.conf)

    @property
    def path(self) -> Path:
        return ROOTS / self.name

    @property
    def spec(self) -> str:
        return " ".join([self.arch, self.suite, *ROOT_PACKAGES, *self.extra])


I386 = Root("bookworm-i386", "i386", "bookworm", extra=TEST_PACKAGES)
S390X = Root("bookworm-s390x", "s390x", "bookworm", extra=TEST_PACKAGES, qemu="s390x")
ARMHF = Root("bookworm-armhf", "armhf", "bookworm", extra=TEST_PACKAGES, qemu="arm")
VM = Root("bookworm-amd64-vm", "amd64", "bookworm", extra=("linux-image-amd64",))
SID = Root("sid-amd64", "amd64", "sid", extra=(*TEST_PACKAGES, "python3.13", "python3.14"))
SID_I386 = Root("sid-i386", "i386", "sid", extra=(*TEST_PACKAGES, "python3.13"))


@dataclass
class Row:
    """One line of the summary table."""

    cell: str
    what: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    setup: float = 0.0
    status: str = "not run"
    log: Path | None = None

    @property
    def ok(self) -> bool:
        # A check's status carries its counts: "passed: 916 facts, 0 mismatches, ...".
        return self.status in ("passed", "not available") or self.status.startswith("passed: ")


@dataclass
class Run:
    """Shared state of one matrix run: what to undo, and the output lock."""

    undo: list[Callable[[], None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    root_locks: dict[str, threading.Lock] = field(default_factory=dict)
    lean: bool = False
    #: A root's setup, once tried in this run: seconds spent, or why it failed.
    root_done: dict[str, float | SetupError] = field(default_factory=dict)
    wheel_lock: threading.Lock = field(default_factory=threading.Lock)
    wheel: Path | None = None
    ready: threading.Condition = field(default_factory=threading.Condition)  # a root's setup ended

    def say(self, text: str) -> None:
        with self.lock:
            print(f"matrix: {text}", flush=True)


# --- helpers --------------------------------------------------------------------------------------


def run_logged(
    argv: Sequence[str | Path],
    log: Path,
    *,
    timeout: float = SUITE_TIMEOUT,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run a command with its output appended to ``log``; its exit status (124: timed out)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        with subprocess.Popen(
            [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env
        ) as proc:
            with _CHILDREN_LOCK:
                _CHILDREN.add(proc)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                out.write(f"\nmatrix: timed out after {timeout:.0f} s\n".encode())
                return 124
            finally:
                with _CHILDREN_LOCK:
                    _CHILDREN.discard(proc)


#: The commands running now: a signal that ends the run ends them first.
_CHILDREN: set[subprocess.Popen[bytes]] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()


def last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    return lines[-1].strip() if lines else "(no output)"


_COUNT = re.compile(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|deselected)\b")
_SUMMARY = re.compile(r"^=*\s*(?:\d+ \w+(?:, )?)+.* in [\d.]+s")


def pytest_counts(text: str) -> tuple[int, int, int] | None:
    """passed, failed (errors and unexpected passes included), skipped (xfailed included),
    from pytest's closing line; None when there is none."""
    lines = [ln for ln in text.splitlines() if _SUMMARY.match(ln.strip()) or "no tests ran" in ln]
    if not lines:
        return None
    counts = {kind: int(n) for n, kind in _COUNT.findall(lines[-1])}
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0) + counts.get("xpassed", 0)
    return counts.get("passed", 0), failed, counts.get("skipped", 0) + counts.get("xfailed", 0)


def installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return done.stdout.strip() == "install ok installed"


def apt_install(packages: Sequence[str], run: Run) -> None:
    missing = [p for p in packages if not installed(p)]
    if not missing:
        return
    run.say(f"apt-get install {' '.join(missing)}")
    log = LOGS / "apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if run_logged(["apt-get", "update", "-qq"], log, env=env) != 0:
        raise SetupError(f"apt-get update failed (see {log})")
    argv = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if run_logged(argv, log, env=env) != 0:
        raise SetupError(f"apt-get install {' '.join(missing)} failed (see {log})")


def copy_project(dest: Path) -> None:
    """The working tree's tracked and new files (what git would commit), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "-C", str(PROJECT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        raise SetupError("git ls-files failed: the project must be a git checkout")
    if dest.exists():
        shutil.rmtree(dest)
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = PROJECT / name
        if not src.is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
    (dest / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | (0o755 if p.is_dir() else 0o644))


# --- binfmt_misc ----------------------------------------------------------------------------------


def mount_binfmt(run: Run) -> None:
    """binfmt_misc mounted (a fresh machine or a container may have neither the module loaded
    nor the file system mounted); what this run mounted is unmounted at the end."""
    if (BINFMT / "register").exists():
        return
    if not BINFMT.is_dir():
        # The module makes the mount point: load it (built in, this just fails).
        subprocess.run(["modprobe", "binfmt_misc"], capture_output=True, check=False)
    done = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not (BINFMT / "register").exists():
        said = (done.stderr.strip().splitlines() or ["no register file"])[-1]
        raise SetupError(f"cannot mount binfmt_misc on {BINFMT}: {said}")
    run.undo.append(lambda: _umount(BINFMT))


_BINFMT_LOCK = threading.Lock()


def register_qemu(arch: str, run: Run) -> None:
    """Register qemu-user for ``arch`` under a name of our own, to be unregistered at the end."""
    with _BINFMT_LOCK:
        _register_qemu(arch, run)


def _register_qemu(arch: str, run: Run) -> None:
    mount_binfmt(run)
    name = f"kstructs-qemu-{arch}"
    if (BINFMT / name).exists():
        return
    conf = Path(f"/usr/lib/binfmt.d/qemu-{arch}.conf")
    if not conf.exists():
        raise SetupError(f"{conf} is missing (qemu-user-static)")
    line = conf.read_text().strip()
    entry = re.sub(r"^:qemu-[^:]+:", f":{name}:", line)
    if not entry.endswith("F"):
        entry += "F"  # fix the interpreter at registration: the roots do not contain it
    try:
        (BINFMT / "register").write_text(entry + "\n")
    except OSError as e:
        raise SetupError(f"cannot register {name} with binfmt_misc: {e.strerror}") from None
    run.undo.append(lambda: _unregister(name))
    run.say(f"binfmt_misc: registered {name}")


def _unregister(name: str) -> None:
    with contextlib.suppress(OSError):
        (BINFMT / name).write_text("-1\n")
        print(f"matrix: binfmt_misc: unregistered {name}", flush=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False)


# --- Debian roots ---------------------------------------------------------------------------------


def ensure_root(root: Root, run: Run) -> float:
    """Make ``root`` (or reuse the one a previous run made); the seconds its setup took in this
    run. Tried once per run: setup started ahead (see prepare) is waited for, and its failure is
    every user's."""
    with run.root_locks.setdefault(root.name, threading.Lock()):
        done = run.root_done.get(root.name)
        if isinstance(done, SetupError):
            raise done
        if done is not None:
            return done
        try:
            spent: float | SetupError = _ensure_root(root, run)
        except SetupError as e:
            spent = e
        except (OSError, subprocess.SubprocessError) as e:
            spent = SetupError(f"setting up {root.name} failed: {type(e).__name__}: {e}")
        with run.ready:
            run.root_done[root.name] = spent
            run.ready.notify_all()
        if isinstance(spent, SetupError):
            raise spent
        return spent


def present(stamp: list[str], installed: set[str]) -> list[str]:
    """A root's stamp (architecture, suite, packages) less the packages not installed."""
    return stamp[:2] + [package for package in stamp[2:] if package in installed]


def _ensure_root(root: Root, run: Run) -> float:
    stamp = root.path / ".kstructs-matrix"
    have = stamp.read_text().split() if stamp.exists() else []
    if have[2:] and debroot.has_dpkg_database(root.path):
        # The stamp says what was asked for, dpkg what is there: a package removed since is added.
        status = (root.path / "var" / "lib" / "dpkg" / "status").read_text(errors="replace")
        have = present(have, debroot.installed_packages(status))
    if have == root.spec.split():
        return 0.0
    start = time.monotonic()
    if root.qemu:
        register_qemu(root.qemu, run)
    grows = have[:2] == root.spec.split()[:2] and set(have) < set(root.spec.split())
    if grows and debroot.has_dpkg_database(root.path):
        add_packages(root, sorted(set(root.spec.split()) - set(have)), run)
        stamp.write_text(root.spec)
        return time.monotonic() - start
    # A root unpacked without dpkg (tools/debroot.py) has no database apt could add to: made anew.
    if debroot.mounts_under(root.path):
        raise SetupError(f"{root.path} has mounts left: unmount them first")
    if root.path.exists():
        shutil.rmtree(root.path)
    how = "unpacked natively" if root.qemu else "a few minutes"
    run.say(f"debootstrap {root.suite} {root.arch} into {root.path} ({how})")
    debs = CACHE / "debs" / root.name
    debs.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"setup-{root.name}.log"
    log.unlink(missing_ok=True)
    try:
        debroot.make_root(
            root.path,
            arch=root.arch,
            suite=root.suite,
            packages=[*ROOT_PACKAGES, *root.extra],
            mirror=MIRROR,
            cache_dir=debs,
            log=log,
            run=run_logged,
            foreign=root.qemu is not None,
        )
    except SetupError as e:
        raise SetupError(f"{e}: {last_line(log)} (see {log})") from None
    stamp.write_text(root.spec)
    return time.monotonic() - start


def add_packages(root: Root, packages: Sequence[str], run: Run) -> None:
    """Install what a root made by an earlier run lacks, with the root's own apt."""
    run.say(f"{root.name}: apt-get install {' '.join(packages)}")
    log = LOGS / f"setup-{root.name}.log"
    shutil.copy("/etc/resolv.conf", root.path / "etc" / "resolv.conf")
    # A mirror or a snapshot of sid may serve a Release file past its Valid-Until date: its
    # signature is still checked, its age is not.
    update = "apt-get -o Acquire::Check-Valid-Until=false update -qq"
    apt = f"{update} && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends"
    with debroot.chroot_mounts(root.path):
        code = run_logged(["chroot", root.path, "/bin/sh", "-c", f"{apt} {' '.join(packages)}"], log)
    if code != 0:
        raise SetupError(f"apt-get install {' '.join(packages)} in {root.name} failed: {last_line(log)}")


def root_suite(
    root: Root, row: Row, run: Run, *, python: str = "python3", markers: str | None = None, paths: Sequence[str] = ()
) -> None:
    """The suite inside a Debian root, by chroot (the host's kernel, the root's userland), with the
    project's wheel installed for ``python`` (its metadata and its ``kstructs`` command)."""
    row.setup += ensure_root(root, run)
    wheel = project_wheel(run)
    if root.qemu:
        register_qemu(root.qemu, run)
    bindir = f"kstructs-bin-{python}"
    with run.root_locks[root.name]:
        copy_project(root.path / "kstructs-src")
        spread_wheel(wheel, root.path / "kstructs-site", root.path / bindir, f"/usr/bin/{python}")
        argv: list[str | Path] = ["chroot", root.path, "/usr/bin/env", "-i", f"PATH=/{bindir}:{PATH}", "HOME=/root"]
        argv += ["LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", "PYTHONPATH=/kstructs-src:/kstructs-site"]
        if root.qemu:
            argv += [f"KSTRUCTS_TEST_TIMEOUT_SCALE={EMULATED_SLOWDOWN}"]  # the tests' own hang guards
        pytest = [python, "-m", "pytest", *pytest_options(emulated=root.qemu is not None)]
        pytest += [*(["-m", markers] if markers else []), *(paths or ["tests"])]
        argv += ["/bin/sh", "-c", f"cd /kstructs-src && exec {shlex.join(pytest)}"]
        with debroot.chroot_mounts(root.path):
            pytest_cell(argv, row, run)


def pytest_options(*, emulated: bool) -> list[str]:
    """pytest's options in every cell: no cache in the tree, the matrix's Hypothesis profile, the
    slowest tests named; under emulation a longer per-test limit and a stack for any slow test."""
    options = ["-q", "-p", "no:cacheprovider", "-p", PLUGIN, "--durations=15", "--color=no"]
    if emulated:
        options += ["-o", f"timeout={EMULATED_TEST_TIMEOUT}", "-o", f"faulthandler_timeout={SLOW_REPORT}"]
    return options


def project_wheel(run: Run) -> Path:
    """The project's wheel, built once per run by the host's pip (bookworm's setuptools is older
    than the build needs): every cell installs this one, so metadata and entry point are real."""
    with run.wheel_lock:
        if run.wheel is None:
            out = CACHE / "wheel"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            log = LOGS / "setup-wheel.log"
            log.unlink(missing_ok=True)
            argv: list[str | Path] = [host_python(), "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, PROJECT]
            if run_logged(argv, log, timeout=600) != 0:
                raise SetupError(f"pip wheel of the project failed: {last_line(log)} (see {log})")
            wheels = sorted(out.glob("kstructs-*.whl"))
            if len(wheels) != 1:
                raise SetupError(f"pip wheel made {len(wheels)} kstructs wheels in {out}, not one")
            run.wheel = wheels[0]
        return run.wheel


def spread_wheel(wheel: Path, site: Path, bindir: Path, python: str) -> None:
    """Install a pure-Python wheel from outside a root that has no pip (the wheel format's own
    steps): its files into ``site``; each console script of its entry_points.txt into ``bindir``,
    started by ``python``, which is linked there as ``python`` too."""
    for path in (site, bindir):
        shutil.rmtree(path, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(python)
    section = ""
    for info in site.glob("*.dist-info/entry_points.txt"):
        for line in info.read_text().splitlines():
            if line.startswith("["):
                section = line.strip("[] ")
            elif section == "console_scripts" and "=" in line:
                name, target = (part.strip() for part in line.split("=", 1))
                module, func = target.split(":")
                script = bindir / name
                script.write_text(f"#!{python}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
                script.chmod(0o755)
    for p in [site, *site.rglob("*")]:
        p.chmod(p.stat().st_mode | (0o755 if p.is_dir() else 0o644))


def pytest_cell(
    argv: Sequence[str | Path], row: Row, run: Run, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> None:
    assert row.log is not None
    row.log.unlink(missing_ok=True)
    run.say(f"{row.cell}: running the suite ({row.what})")
    start = time.monotonic()
    code = run_logged(argv, row.log, cwd=cwd, env=env)
    row.seconds = time.monotonic() - start
    record(row, code, row.log.read_text(errors="replace"))


def record(row: Row, code: int, output: str) -> None:
    counts = pytest_counts(output)
    if counts is None:
        row.status = f"no pytest summary (exit {code})"
        return
    row.passed, row.failed, row.skipped = counts
    row.status = "passed" if code == 0 and not row.failed else f"FAILED (exit {code})"


# --- cells ----------------------------------------------------------------------------------------


def host_python() -> str:
    venv = PROJECT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def check_available() -> bool:
    done = subprocess.run(
        [host_python(), "-m", "kstructs", "check", "--help"],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        check=False,
    )
    return done.returncode == 0 and "--target" in done.stdout


def check_cell(triple: str, row: Row, run: Run, available: bool) -> None:
    if not available:
        row.status = "not available"
        return
    assert row.log is not None
    row.log.unlink(missing_ok=True)
    start = time.monotonic()
    argv: list[str | Path] = [host_python(), "-m", "kstructs", "check", "--target", triple, *MODULES]
    code = run_logged(argv, row.log, cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)}, timeout=600)
    row.seconds = time.monotonic() - start
    row.passed, row.failed = (1, 0) if code == 0 else (0, 1)
    row.status = {0: "passed", 1: "FAILED (mismatch)"}.get(code, f"FAILED (exit {code}: {last_line(row.log)})")
    found = re.search(r"(\d+ facts) checked.*?; (.*)$", last_line(row.log))
    if code in (0, 1) and found:
        row.status += f": {found.group(1)}, {found.group(2)}"


VM_INIT = """#!/bin/sh
# PID 1 of the test VM: mount what the suite needs, run it, print its status, power off.
mount -t proc proc /proc 2>/dev/null; mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null; mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm; mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "kstructs-vm: Linux $(uname -r) $(uname -m), $(python3 --version)"
cd /kstructs-src && env -i PATH={path} HOME=/root LANG=C.UTF-8 PYTHONPATH=/kstructs-src \\
    KSTRUCTS_TEST_TIMEOUT_SCALE={scale} python3 -m pytest -q -p no:cacheprovider -p {plugin} --color=no \\
    --durations=15 -m root {tests}
echo "kstructs-vm: exit $?"
sync
echo o > /proc/sysrq-trigger
sleep 60
"""
#: The root tests --lean runs in the VM: each behaviour that differs before Linux 6.6 (the
#: subscribe replies, the proc_input filter and its plain-op fallback, the privilege error,
#: namespaces, interrupted reads, the basic watch) and none of the fork storms, which take
#: minutes under TCG. pytest fails the cell on a name that no longer exists.
VM_LEAN = (
    "tests/test_listener.py",
    "tests/test_recvmmsg.py",
    "tests/test_robustness.py::test_unprivileged_sender_cannot_reach_the_listener",
    "tests/test_robustness.py::test_a_child_closing_an_inherited_listener_leaves_the_parent_listening",
    "tests/test_robustness.py::test_a_forged_error_reply_does_not_stop_open",
    "tests/test_robustness.py::test_an_error_reply_is_confirmed_under_a_fresh_nonce",
    "tests/test_robustness.py::test_an_interrupt_as_recvmmsg_returns_loses_nothing",
    "tests/test_robustness.py::test_close_from_another_thread_wakes_the_reader",
    "tests/test_cli.py::test_json_until_a_signal",
    "tests/test_cli.py::test_text",
    "tests/test_cli.py::test_events_option_filters",
    "tests/test_cli.py::test_unprivileged_user",
    "tests/test_cli.py::test_foreign_network_namespace",
    "tests/test_docs.py::test_console",
)
#: What the image leaves out of the root: the kernel and initramfs (qemu loads them from the
#: host), the modules the initramfs does not hold (the suite needs none), apt's and dpkg's
#: caches, documentation and translations.
VM_UNNEEDED = (
    "boot",
    "usr/lib/modules",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
#: Hang guards in the tests are this many times longer under TCG (KSTRUCTS_TEST_TIMEOUT_SCALE).
VM_TCG_SCALE = 10


def kvm_usable() -> tuple[bool, str]:
    """Whether qemu can use KVM for a distribution kernel, and what it will use."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "TCG (no /dev/kvm)"
    if Path("/sys/module/kvm_pvm").exists():
        # PVM runs only guest kernels built for it: a stock kernel never starts.
        return False, "TCG (/dev/kvm is PVM)"
    return True, "KVM"


def vm_image(image: Path, tests: Sequence[str], scale: int) -> None:
    """An ext4 image of the VM root, less VM_UNNEEDED, with the project, its
    bytecode, the console script and the init script that runs ``tests``."""
    stage = image.with_suffix(".stage")
    log = LOGS / "setup-vm-image.log"
    log.unlink(missing_ok=True)
    if stage.exists():
        shutil.rmtree(stage)
    try:
        # Hard links: a copy that costs no space; only new files are written into it.
        if run_logged(["cp", "-al", VM.path, stage], log) != 0:
            raise SetupError(f"cannot copy the VM root: {last_line(log)}")
        for name in VM_UNNEEDED:
            shutil.rmtree(stage / name, ignore_errors=True)
        copy_project(stage / "kstructs-src")
        # Bytecode made here, natively: every `python3 -m kstructs` in the VM would compile it again.
        argv: list[str | Path] = ["chroot", stage, "python3", "-m", "compileall", "-q", "/kstructs-src/kstructs"]
        if run_logged(argv, log) != 0:
            raise SetupError(f"compileall in the VM root failed: {last_line(log)}")
        # The console script of [project.scripts], as pip would write it (the docs run `kstructs watch`).
        script = stage / "usr" / "local" / "bin" / "kstructs"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.unlink(missing_ok=True)  # a new file, not one linked to the root's
        script.write_text("#!/usr/bin/python3\nimport sys\nfrom kstructs.__main__ import main\nsys.exit(main())\n")
        script.chmod(0o755)
        init = stage / "kstructs-init"
        init.unlink(missing_ok=True)
        text = VM_INIT.replace("{path}", PATH).replace("{plugin}", PLUGIN)
        init.write_text(text.replace("{scale}", str(scale)).replace("{tests}", " ".join(tests)))
        init.chmod(0o755)
        size = sum(p.lstat().st_size for p in stage.rglob("*") if p.is_file() and not p.is_symlink())
        image.unlink(missing_ok=True)
        mb = size // 2**20 + 384
        mkfs: list[str | Path] = ["mkfs.ext4", "-q", "-F", "-L", "kstructs", "-d", stage, image, f"{mb}M"]
        if run_logged(mkfs, log) != 0:
            raise SetupError(f"mkfs.ext4 of the VM image failed: {last_line(log)}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def kernel_cell(row: Row, run: Run, *, lean: bool = False) -> None:
    """The root suite (``lean``: VM_LEAN) on bookworm's own kernel, booted by qemu-system-x86_64."""
    row.setup += ensure_root(VM, run)
    start = time.monotonic()
    boot = VM.path / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    if not kernels:
        raise SetupError(f"no kernel in {boot} (linux-image-amd64)")
    vmlinuz = kernels[-1]
    initrd = boot / vmlinuz.name.replace("vmlinuz-", "initrd.img-")
    if not initrd.exists():
        raise SetupError(f"no initramfs {initrd} (initramfs-tools)")
    kvm, accel = kvm_usable()
    image = CACHE / f"vm-{os.getpid()}.img"  # two runs at once do not share it
    with run.root_locks[VM.name]:
        vm_image(image, VM_LEAN if lean else ["tests"], 1 if kvm else VM_TCG_SCALE)
    row.what += f", {accel}" + (", lean subset" if lean else "")
    row.setup += time.monotonic() - start
    assert row.log is not None
    row.log.unlink(missing_ok=True)
    argv: list[str | Path] = [
        "qemu-system-x86_64",
        *(["-accel", "kvm", "-cpu", "host"] if kvm else ["-accel", "tcg", "-cpu", "max"]),
        "-m",
        "2048",  # the kernel allows a thread per 128 KiB of RAM: a storm test forks 12000 at once
        "-smp",
        "2",
    ]
    argv += ["-display", "none", "-monitor", "none", "-serial", f"file:{row.log}", "-no-reboot", "-nic", "none"]
    argv += ["-kernel", vmlinuz, "-initrd", initrd, "-drive", f"file={image},format=raw,if=virtio"]
    # mitigations=off: a throwaway test VM; page-table isolation alone makes every system call
    # cost a TLB flush, which TCG pays dearly.
    cmdline = "root=/dev/vda rw console=ttyS0 init=/kstructs-init panic=-1 loglevel=4 no_timer_check mitigations=off"
    argv += ["-append", cmdline]
    run.say(f"{row.cell}: booting {vmlinuz.name} ({accel}{', lean' if lean else ''})")
    qlog = LOGS / "qemu.log"
    qlog.unlink(missing_ok=True)
    begin = time.monotonic()
    code = run_logged(argv, qlog, timeout=VM_TIMEOUT)
    row.seconds = time.monotonic() - begin
    image.unlink(missing_ok=True)
    console = row.log.read_text(errors="replace") if row.log.exists() else ""
    if code != 0 or "kstructs-vm:" not in console:
        said = last_line(row.log) if console else last_line(qlog)
        raise SetupError(f"the VM did not run the suite: qemu exit {code}, {said} (see {row.log})")
    found = re.search(r"kstructs-vm: Linux (\S+)", console)
    if found:
        row.what = f"Linux {found.group(1)}{row.what[row.what.index(',') :]}"
    status = re.search(r"kstructs-vm: exit (\d+)", console)
    record(row, int(status.group(1)) if status else 125, console)


def pyenv_versions() -> list[Path]:
    base = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for p in base.glob("3.*"):
        m = re.fullmatch(r"3\.(\d+)\.(\d+)", p.name)
        if m and int(m.group(1)) >= 11 and (p / "bin" / "python3").exists():
            found.append(p)
    return sorted(found, key=lambda p: tuple(int(x) for x in p.name.split(".")))


def pyenv_cell(version: Path, row: Row, run: Run) -> None:
    """The whole suite on a pyenv CPython, in a venv of its own with pytest and hypothesis."""
    start = time.monotonic()
    venv = CACHE / "venvs" / f"cpython-{version.name}"
    python = venv / "bin" / "python"
    log = LOGS / f"setup-cpython-{version.name}.log"
    if not (venv / ".kstructs-matrix").exists() or (venv / ".kstructs-matrix").read_text() != " ".join(PIP_PACKAGES):
        log.unlink(missing_ok=True)
        if venv.exists():
            shutil.rmtree(venv)
        if run_logged([version / "bin" / "python3", "-m", "venv", venv], log) != 0:
            raise SetupError(f"venv for CPython {version.name} failed (see {log})")
        if run_logged([python, "-m", "pip", "install", "-q", *PIP_PACKAGES], log) != 0:
            raise SetupError(f"pip install {' '.join(PIP_PACKAGES)} for CPython {version.name} failed (see {log})")
        (venv / ".kstructs-matrix").write_text(" ".join(PIP_PACKAGES))
    wheel = project_wheel(run)
    if run_logged([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel], log) != 0:
        raise SetupError(f"pip install of the project's wheel for CPython {version.name} failed (see {log})")
    row.setup = time.monotonic() - start
    env = {"PATH": f"{venv / 'bin'}:{PATH}", "HOME": "/root", "LANG": "C.UTF-8"}
    plugin = CACHE / "plugin"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": f"{PROJECT}:{plugin}"}
    argv: list[str | Path] = [python, "-m", "pytest", *pytest_options(emulated=False), "tests"]
    pytest_cell(argv, row, run, cwd=PROJECT, env=env)


def sid_version(python: str) -> str:
    done = subprocess.run(
        ["chroot", str(SID.path), python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or python


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Cell:
    row: Row
    action: Callable[[], None]
    lean: bool
    roots: tuple[Root, ...] = ()  # the Debian roots it needs, set up ahead (see prepare)

    @property
    def weight(self) -> int:
        """How long it runs, roughly: the longest start first, so that they end together."""
        if any(root.qemu for root in self.roots):
            return 3  # Python under qemu-user: 5 to 20 times slower than native
        if self.row.cell.startswith("kernel:"):
            return 2  # a boot and the root suite, under TCG where KVM is not usable
        return 1


def cells(run: Run, *, lean: bool = False) -> list[Cell]:
    out: list[Cell] = []
    available = check_available()
    for triple in TARGETS:
        row = Row(f"check:{triple}", f"{triple}-gcc, compile-only", log=LOGS / f"check-{triple}.log")
        out.append(Cell(row, functools.partial(check_cell, triple, row, run, available), True))

    def abi(
        root: Root, cell: str, what: str, in_lean: bool, *, python: str = "python3", paths: Sequence[str] = ()
    ) -> None:
        row = Row(cell, what, log=LOGS / f"{cell.replace(':', '-')}.log")
        suite = functools.partial(root_suite, root, row, run, python=python, markers="not root and not wild")
        out.append(Cell(row, functools.partial(suite, paths=paths), in_lean, roots=(root,)))

    abi(I386, "abi:i386", "bookworm i386, native chroot, root-free suite", True)
    if lean:
        what = "bookworm s390x (big-endian), qemu-user, root-free byte-order files"
        abi(S390X, "abi:s390x", what, True, paths=BIG_ENDIAN_LEAN)
    else:
        abi(S390X, "abi:s390x", "bookworm s390x (big-endian), qemu-user, root-free suite", True)
    abi(ARMHF, "abi:armhf", "bookworm armhf, qemu-user, root-free suite", False)
    what = "sid i386, native chroot, python3.13 (_align_), root-free suite"
    abi(SID_I386, "abi:i386-3.13", what, False, python="python3.13")
    kernel_row = Row("kernel:6.1", "bookworm linux-image-amd64, qemu-system, root suite", log=LOGS / "kernel-6.1.log")
    out.append(Cell(kernel_row, lambda: kernel_cell(kernel_row, run, lean=run.lean), True, roots=(VM,)))
    for version in pyenv_versions():
        row = Row(f"python:{version.name}", "pyenv, host kernel, whole suite", log=LOGS / f"python-{version.name}.log")
        out.append(Cell(row, functools.partial(pyenv_cell, version, row, run), False))
    for python, in_lean in (("python3.13", False), ("python3.14", True)):
        row = Row(f"python:sid-{python}", "Debian sid chroot, host kernel, whole suite", log=LOGS / f"sid-{python}.log")

        def sid(row: Row = row, python: str = python) -> None:
            ensure_root(SID, run)  # root_suite counts its setup
            row.cell = f"python:{sid_version(python)}"
            root_suite(SID, row, run, python=python)

        out.append(Cell(row, sid, in_lean, roots=(SID,)))
    return out


def table(rows: Sequence[Row]) -> str:
    head = ("cell", "what", "passed", "failed", "skipped", "seconds", "setup s", "status")
    body = [
        (r.cell, r.what, str(r.passed), str(r.failed), str(r.skipped), f"{r.seconds:.0f}", f"{r.setup:.0f}", r.status)
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in (head, *body)]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # The cells' threads wait for their commands: end those, start no other, then end the run.
    _STOPPING.set()
    with _CHILDREN_LOCK:
        for proc in _CHILDREN:
            proc.terminate()
    raise SystemExit(128 + signum)


def use_cache(path: Path) -> None:
    """Keep setup (roots, venvs, downloads, logs) under ``path``."""
    # Module globals on purpose: every cell's paths (the kernel cell's too) are read from them.
    global CACHE, ROOTS, LOGS  # noqa: PLW0603
    CACHE = path.resolve()
    ROOTS = CACHE / "roots"
    LOGS = CACHE / "logs"


def prepare(chosen: Sequence[Cell], run: Run, pool: concurrent.futures.Executor) -> None:
    """Start every root the chosen cells need, and the wheel, at once: a fresh machine spends its
    setup downloading and unpacking, which overlaps with the checks and with each other. A cell
    waits for its own root (ensure_root) and reports its failure."""
    # In the order the cells start (the longest first).
    if any(cell.roots or cell.row.cell.startswith("python:") for cell in chosen):
        pool.submit(_quietly, project_wheel, run)
    roots = {root.name: root for cell in sorted(chosen, key=lambda c: -c.weight) for root in cell.roots}
    for root in roots.values():
        pool.submit(_quietly, ensure_root, root, run)


def _quietly(step: Callable[[Root, Run], object] | Callable[[Run], object], *args: object) -> None:
    # The cell that needs it says why it failed.
    with contextlib.suppress(SetupError, OSError, subprocess.SubprocessError):
        step(*args)  # type: ignore[arg-type]


def summary(chosen: Sequence[Cell], started: float) -> None:
    rows = [c.row for c in chosen]
    print()
    print(table(rows))
    wall = time.monotonic() - started
    passed = sum(r.passed for r in rows)
    failed = sum(r.failed for r in rows)
    skipped = sum(r.skipped for r in rows)
    print(f"\nmatrix: {len(rows)} cells in {wall:.0f} s wall; logs in {LOGS}")
    print(f"matrix: {passed} passed, {failed} failed, {skipped} skipped", flush=True)


def next_ready(pending: list[Cell], run: Run) -> Cell | None:
    """The longest of the cells whose roots are set up (or failed), taken from ``pending``;
    None when none is left. On a fresh machine the quick roots are ready first: their cells run
    while the slow ones (a VM, a root under emulation) are still being made."""
    with run.ready:
        while pending and not _STOPPING.is_set():
            for cell in pending:
                if all(root.name in run.root_done for root in cell.roots):
                    pending.remove(cell)
                    return cell
            run.ready.wait(timeout=10)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/matrix",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--lean",
        action="store_true",
        help="the CI subset: 7 checks, abi:i386, abi:s390x (the byte-order files only), kernel:6.1, the newest Python",
    )
    parser.add_argument("--only", action="append", default=[], metavar="CELL", help="run only this cell (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the cells and exit")
    parser.add_argument("--jobs", type=int, default=2, help="suites run at once (default 2)")
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        default=Path(os.environ.get("KSTRUCTS_MATRIX_CACHE") or DEFAULT_CACHE),
        help=f"keep roots, venvs, downloads and logs here (default $KSTRUCTS_MATRIX_CACHE or {DEFAULT_CACHE})",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("matrix: must run as root (debootstrap, chroot, binfmt_misc, mounts)", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    use_cache(args.cache)
    run = Run(lean=args.lean)
    started = time.monotonic()
    setup = concurrent.futures.ThreadPoolExecutor(max_workers=4)  # mostly download and unpacking
    try:
        LOGS.mkdir(parents=True, exist_ok=True)
        chosen = [
            c
            for c in cells(run, lean=args.lean)
            if (c.lean or not args.lean) and (not args.only or c.row.cell in args.only)
        ]
        if args.only and (unknown := set(args.only) - {c.row.cell for c in chosen}):
            raise SetupError(f"no such cell: {', '.join(sorted(unknown))} (tools/matrix --list)")
        if args.list:
            print("\n".join(f"{c.row.cell}  {c.row.what}" for c in chosen))
            return 0
        apt_install([*HOST_PACKAGES, *TARGETS.values()], run)
        prepare(chosen, run, setup)
        errors: list[str] = []

        def go(cell: Cell) -> None:
            try:
                cell.action()
            except (SetupError, OSError, subprocess.SubprocessError) as e:
                said = str(e) if isinstance(e, SetupError) else f"{type(e).__name__}: {e}"
                cell.row.status = "setup failed"
                errors.append(f"{cell.row.cell}: {said}")
                print(f"matrix: {cell.row.cell}: {said}", file=sys.stderr, flush=True)
            run.say(f"{cell.row.cell}: {cell.row.status}")

        # The checks first, quickly, while the roots are set up; then the suites, a few at once.
        for cell in chosen:
            if cell.row.cell.startswith("check:"):
                go(cell)
        pending = sorted((c for c in chosen if not c.row.cell.startswith("check:")), key=lambda c: -c.weight)

        def worker() -> None:
            while (cell := next_ready(pending, run)) is not None:
                go(cell)

        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                for done in [pool.submit(worker) for _ in range(max(1, args.jobs))]:
                    done.result()
        except SystemExit:
            summary(chosen, started)  # ended by a signal: the table says what ran
            raise
        summary(chosen, started)
        if errors:
            return 2
        return 0 if all(c.row.ok for c in chosen) else 1
    except (SetupError, OSError, subprocess.SubprocessError) as e:
        said = str(e) if isinstance(e, SetupError) else f"{type(e).__name__}: {e}"
        print(f"matrix: {said}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("matrix: interrupted", file=sys.stderr)
        return 130
    finally:
        setup.shutdown(wait=True, cancel_futures=True)
        for undo in reversed(run.undo):
            undo()


if __name__ == "__main__":
    sys.exit(main())
