#!/usr/bin/env python3
"""kstructs check on a real package: linuxpy's generated raw modules against the installed headers.

    python tools/wild_check.py [--version 0.25.0] [--venv DIR] [--json]

Installs linuxpy from PyPI into a throwaway venv (or uses --venv), and checks
each raw module with ``kstructs check --python VENV/bin/python``: the
layouts are computed by that venv's interpreter, the C side by this
machine's compiler and headers. The settings live in a ``pyproject.toml``
written for the run, as a library author would keep them.

Every mismatch is then accounted for: a real bug in linuxpy, shown by a small
C program under tools/wild/ (compiled and run here, its output printed), or
an item the installed headers lack because linuxpy was generated from newer
ones (skipped with that reason; a skip that matches nothing fails the check,
so the list cannot go stale). Exit status: 0 every mismatch is accounted
for, 1 some are not, 2 the run could not be made.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WILD = ROOT / "tools" / "wild"

NEWER = "not in the installed headers: linuxpy was generated from newer ones"

# module -> headers, and the items the installed (Linux 6.1) headers lack
MODULES: dict[str, dict[str, Any]] = {
    "linuxpy.video.raw": {
        "headers": [
            "linux/v4l2-common.h",
            "linux/v4l2-controls.h",
            "linux/videodev2.h",
            "linux/v4l2-mediabus.h",
            "linux/v4l2-dv-timings.h",
            "linux/v4l2-subdev.h",
        ],
        "constants": {"IOC.*": "VIDIOC_*"},
        "skip": [
            "struct v4l2_meta_format",  # width, height, bytesperline
            "struct v4l2_format.fmt.meta",
            "struct v4l2_create_buffers.max_num_buffers",
            "struct v4l2_create_buffers.reserved",
            "struct v4l2_remove_buffers",
            "VIDIOC_REMOVE_BUFS",
            *(f"struct v4l2_ctrl_av1_{s}" for s in ("sequence", "tile_group_entry", "frame", "film_grain")),
            *(f"struct v4l2_ext_control.p_{f}" for f in ("s32", "s64", "hdr10_cll_info", "hdr10_mastering_display")),
            *(f"struct v4l2_ext_control.p_av1_{f}" for f in ("sequence", "tile_group_entry", "frame", "film_grain")),
            *(
                f"struct v4l2_subdev_{s}.{f}"
                for s in (
                    "format",
                    "crop",
                    "mbus_code_enum",
                    "frame_size_enum",
                    "frame_interval",
                    "frame_interval_enum",
                    "selection",
                )
                for f in ("stream", "reserved")
            ),
            "struct v4l2_subdev_frame_interval.which",
            *(f"struct v4l2_subdev_{s}" for s in ("route", "routing", "client_capability")),
            *(f"VIDIOC_SUBDEV_{s}" for s in ("G_ROUTING", "S_ROUTING", "G_CLIENT_CAP", "S_CLIENT_CAP")),
        ],
    },
    "linuxpy.input.raw": {"headers": ["linux/input.h", "linux/uinput.h", "linux/input-event-codes.h"], "skip": []},
    "linuxpy.gpio.raw": {"headers": ["linux/gpio.h"], "skip": []},
    "linuxpy.fb.raw": {"headers": ["linux/fb.h"], "skip": []},
    "linuxpy.midi.raw": {"headers": ["linux/ioctl.h", "sound/asequencer.h"], "skip": []},
    "linuxpy.usb.raw": {
        "headers": [
            "linux/ioctl.h",
            "linux/usbdevice_fs.h",
            "linux/usbip.h",
            "linux/usb/ch9.h",
            "linux/usb/ch11.h",
            "linux/usb/video.h",
        ],
        "skip": [
            "struct usb_string_descriptor.legacy_padding",
            "struct usb_string_descriptor.__empty_wData",
            "struct usb_ssp_cap_descriptor.legacy_padding",
            "struct usb_ssp_cap_descriptor.__empty_bmSublinkSpeedAttr",
            "struct usb_plat_dev_cap_descriptor",
            "struct usb_hid_descriptor",
            "struct uvc_format_uncompressed.bmInterlaceFlags",
            "struct uvc_format_mjpeg.bmInterlaceFlags",
        ],
    },
}

# Field names linuxpy gives the C library's own structs.
FIELDS = {
    "timeval.secs": "tv_sec",
    "timeval.usecs": "tv_usec",
    "timespec.secs": "tv_sec",
    "timespec.nsecs": "tv_nsec",
}

# item pattern -> the C program that shows the bug
_FLEX = (
    r"usbdevfs_urb|usbdevfs_streams|USBDEVFS_(SUBMITURB|ALLOC_STREAMS|FREE_STREAMS)|usb_string_descriptor|"
    r"usb_key_descriptor|usb_ssp_cap_descriptor|usb_pd_cap_provider_port_descriptor|uvc_header_descriptor|"
    r"uvc_input_header_descriptor|uvc_output_header_descriptor|uvc_frame_uncompressed|uvc_frame_mjpeg"
)
CONFIRMED: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^(struct )?({_FLEX})\b"), "flexible_as_pointer.c"),
    (re.compile(r"^struct snd_seq_(queue|client)_info\b"), "snd_seq.c"),
]


def pyproject() -> str:
    lines = ["[tool.kstructs.check]", 'values = "width"  # linuxpy keeps ioctl numbers as signed 32-bit ints', ""]
    lines.append("[tool.kstructs.check.fields]")
    lines += [f'"{k}" = "{v}"' for k, v in FIELDS.items()]
    for module, spec in MODULES.items():
        lines += ["", f'[tool.kstructs.check."{module}"]', f"headers = {json.dumps(spec['headers'])}"]
        if "constants" in spec:
            lines.append("constants = { " + ", ".join(f'"{k}" = "{v}"' for k, v in spec["constants"].items()) + " }")
        if spec["skip"]:
            lines.append(f'[tool.kstructs.check."{module}".skip]')
            lines += [f'"{item}" = "{NEWER}"' for item in spec["skip"]]
    return "\n".join([*lines, ""])


def venv(where: Path, version: str) -> Path:
    python = where / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"linuxpy=={version}"], check=True)
    return python


def run_c(program: str, work: Path, cc: str) -> str:
    exe = work / Path(program).stem
    subprocess.run([cc, "-o", str(exe), str(WILD / program)], check=True, capture_output=True)
    done = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"(the layouts now agree: {program} exited {done.returncode})"
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="0.25.0", help="the linuxpy release to check")
    parser.add_argument("--venv", type=Path, help="a venv to install it into (default: a throwaway one)")
    parser.add_argument("--json", action="store_true", help="print the per-module results as JSON")
    args = parser.parse_args(argv)
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("wild_check: no C compiler", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kstructs-wild-") as tmp:
        work = Path(tmp)
        try:
            python = venv(args.venv or work / "venv", args.version)
        except subprocess.CalledProcessError as e:
            print(f"wild_check: cannot install linuxpy {args.version}: status {e.returncode}", file=sys.stderr)
            return 2
        (work / "pyproject.toml").write_text(pyproject())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        results = []
        unexplained = 0
        programs: dict[str, str] = {}
        for module in MODULES:
            done = subprocess.run(
                [sys.executable, "-m", "kstructs", "check", module, "--json", "--python", str(python)],
                capture_output=True,
                text=True,
                cwd=work,
                env=env,
                check=False,
            )
            doc = json.loads(done.stdout)
            if doc["status"] == 2:
                print(f"wild_check: {module}: {doc['error']}", file=sys.stderr)
                return 2
            bugs: dict[str, list[str]] = {}
            loose = []
            for f in doc["findings"]:
                if f["severity"] != "mismatch":
                    continue
                program = next((p for pattern, p in CONFIRMED if pattern.search(f["item"])), None)
                if program is None:
                    loose.append(f)
                else:
                    bugs.setdefault(program, []).append(f["item"])
            for program in bugs:
                programs.setdefault(program, run_c(program, work, cc))
            unexplained += len(loose)
            results.append(
                {
                    "module": module,
                    "checked": doc["checked"],
                    "mismatches": doc["counts"]["mismatch"],
                    "confirmed": {p: len(items) for p, items in bugs.items()},
                    "skipped": doc["counts"].get("skipped", 0),
                    "width": doc["counts"].get("width", 0),
                    "not_compared": doc["counts"].get("not-compared", 0),
                    "unexplained": [(f["category"], f["item"], f["binding"], f["c"]) for f in loose],
                }
            )
    if args.json:
        print(json.dumps({"linuxpy": args.version, "modules": results, "programs": programs}, indent=2))
        return 1 if unexplained else 0
    print(f"linuxpy {args.version} against this machine's headers (kstructs check --python)")
    head = ("facts", "mismatches", "confirmed", "skipped", "width", "unexplained")
    print(f"{'module':<20} " + " ".join(f"{h:>{max(6, len(h))}}" for h in head))
    for r in results:
        confirmed = sum(r["confirmed"].values())
        cells = (r["checked"], r["mismatches"], confirmed, r["skipped"], r["width"], len(r["unexplained"]))
        print(f"{r['module']:<20} " + " ".join(f"{c:>{max(6, len(h))}}" for c, h in zip(cells, head, strict=True)))
        for row in r["unexplained"]:
            print(f"    UNEXPLAINED {row}")
    for program, output in programs.items():
        print(f"\n$ tools/wild/{program}\n{output.rstrip()}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
