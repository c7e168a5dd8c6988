"""``python -m kstructs`` and the ``kstructs`` console script: one
subcommand per job, each in its own module (``watch``: ``kstructs._watch``;
``check``: ``kstructs.conformance.cli``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from kstructs import _watch


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kstructs", description="The Linux process-events connector ABI.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    watch = commands.add_parser(
        "watch",
        help="print process events as they happen",
        description="Print process events, one per line, until interrupted.",
    )
    _watch.add_arguments(watch)
    # ``kstructs check`` parses its own arguments (kstructs.conformance.cli); listed here for --help.
    commands.add_parser("check", help="prove a module's ctypes structs against C headers and BTF", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        from kstructs.conformance import cli as check_cli

        return check_cli.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "watch":
        status = _watch.watch(_watch.Options.from_args(args))
        _watch.ignore_stop_signals()  # a signal during the exit must not change its status
        return status
    _parser().print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
