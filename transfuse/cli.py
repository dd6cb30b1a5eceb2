"""The `transfuse` command: `tour`, `bench`, `aot`, `minify`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="transfuse", description="Composable function transforms for NumPy programs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tour", help="a whirlwind tour of the transforms on small examples")
    sub.add_parser("bench", help="the benchmark harness (transfuse bench --help)",
                   add_help=False)
    sub.add_parser("aot", help="compile ahead of time (transfuse aot --help)", add_help=False)
    sub.add_parser("minify", help="shrink a miscompile to a repro (transfuse minify --help)",
                   add_help=False)
    if argv and argv[0] in ("bench", "aot", "minify"):
        return _delegate(argv[0], argv[1:])
    args = parser.parse_args(argv)
    if args.command == "tour":
        from .tour import run_tour
        return run_tour()
    return 2


def _delegate(command: str, rest: list[str]) -> int:
    if command == "bench":
        from .bench.cli import main as bench_main
        return bench_main(rest)
    if command == "minify":
        from .compile.minify_cli import main as minify_main
        return minify_main(rest)
    from .aot import main as aot_main
    return aot_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
