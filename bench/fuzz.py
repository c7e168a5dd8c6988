"""Every fuzzer, bounded in count and time, with its totals in one table.

    python bench/fuzz.py [parser|btf|headers|all] [--count N] [--seconds S] [--seed K]

Each target is a module beside this one (``fuzz_parser.py``, ``fuzz_btf.py``,
``fuzz_headers.py``) with ``fuzz(count, seconds, seed)``, which tries up to
``count`` inputs for at most ``seconds`` and returns its totals: inputs
tried, seconds, foreign exceptions (anything but the library's own error, or
a result that differs where it must not), and the slowest input. A target
whose module is absent is reported as not available. The exit status is 1
when any target found a foreign exception, else 0.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import _common

TARGETS = {"parser": "fuzz_parser", "btf": "fuzz_btf", "headers": "fuzz_headers"}


def run(target: str, count: int, seconds: float, seed: int) -> dict[str, object] | str:
    """The totals of one target, or why it did not run."""
    try:
        module = importlib.import_module(TARGETS[target])
    except ModuleNotFoundError as e:
        if e.name != TARGETS[target]:
            raise
        return "not available"
    result: dict[str, object] = module.fuzz(count, seconds, seed)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", default="all", choices=[*TARGETS, "all"], help="what to fuzz (all)")
    parser.add_argument("--count", type=int, default=100_000, help="inputs per target at most (default 100000)")
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds per target at most (default 120)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    targets = list(TARGETS) if args.target == "all" else [args.target]
    rows: list[list[object]] = []
    findings: list[str] = []
    foreign = 0
    for target in targets:
        result = run(target, args.count, args.seconds, args.seed)
        if isinstance(result, str):
            rows.append([target, result, "", "", "", ""])
            continue
        n = int(str(result["foreign"]))
        foreign += n
        slowest_s = float(str(result["slowest_s"]))
        rows.append(
            [
                target,
                f"{int(str(result['inputs'])):,}",
                f"{float(str(result['seconds'])):.1f}",
                n,
                f"{slowest_s * 1e3:.2f}",
                result["slowest"],
            ]
        )
        found = result.get("findings", [])
        findings += [f"{target}: {f}" for f in (found if isinstance(found, list) else [])]
    print("## Fuzzing\n")
    print(_common.machine())
    print(f"\nSeed {args.seed}; at most {args.count:,} inputs and {args.seconds:g} s per target.\n")
    headers = ["target", "inputs", "seconds", "foreign exceptions", "slowest input (ms)", "slowest input"]
    print(_common.table(headers, rows))
    for line in findings:
        print(f"\n- {line}")
    return 1 if foreign else 0


if __name__ == "__main__":
    sys.exit(main())
