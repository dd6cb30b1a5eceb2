"""`transfuse bench`: run the benchmark suites (or a user's cases) and report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from .core import BASELINE_FAMILIES, Case
from .harness import Settings, print_failure, run_cases
from .report import PlotError, render_markdown, render_text, to_document, write_plot

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    from transfuse.bench.suites import SUITES
    parser = argparse.ArgumentParser(
        prog="transfuse bench",
        description="Benchmark transfuse against NumPy, Numba, JAX and torch.func on the "
                    "seed use cases, checking every result against transfuse's reference "
                    "interpreter before timing it.")
    parser.add_argument("files", nargs="*", metavar="FILE.py",
                        help="run the cases these files register with transfuse.bench.case "
                             "instead of the built-in suites")
    parser.add_argument("--suite", action="extend", nargs="+", default=[], metavar="NAME",
                        help=f"suites to run (default: all): {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes and few repeats: checks that everything runs")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="timed samples per system (default 7, or 2 with --quick)")
    parser.add_argument("--baselines", metavar="LIST", default=",".join(BASELINE_FAMILIES),
                        help="comma-separated baselines to run (default: all of "
                             f"{','.join(BASELINE_FAMILIES)})")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown table")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG chart of the ratios")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `transfuse bench`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        cases = _collect_cases(args)
    except ValueError as exc:
        print(f"transfuse bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.list:
        for case in cases:
            print(f"{case.full_name:32} {case.description}")
        return EXIT_OK
    results = run_cases(cases, settings)
    settings.progress("")
    print(render_text(results))
    for result in results:
        if result.failed:
            print_failure(result)
    return _write_outputs(args, results, settings, argv)


def _settings(args: argparse.Namespace) -> Settings:
    baselines = {b.strip() for b in args.baselines.split(",") if b.strip()}
    unknown = baselines - set(BASELINE_FAMILIES)
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(BASELINE_FAMILIES)}")
    if args.repeat is not None and args.repeat < 1:
        raise ValueError("--repeat must be at least 1")
    return Settings(quick=args.quick, repeat=args.repeat or (2 if args.quick else 7),
                    warmup=1 if args.quick else 2,
                    min_sample_s=0.002 if args.quick else 0.01,
                    budget_s=1.0 if args.quick else 10.0,
                    settle_s=0.0 if args.quick else 0.3,
                    baselines=frozenset(baselines),
                    progress=(lambda m: None) if args.quiet else _progress_printer())


def _collect_cases(args: argparse.Namespace) -> list[Case]:
    from transfuse.bench import load_cases
    from transfuse.bench.suites import SUITES, load_suite
    if args.files:
        if args.suite:
            raise ValueError("give either FILE.py arguments or --suite, not both")
        return [case for path in args.files for case in _load_user_file(load_cases, path)]
    names = [n.strip() for arg in args.suite for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SUITES)}")
    return [case for name in (names or list(SUITES))
            for case in load_suite(name).cases(args.quick)]


def _load_user_file(load_cases: Callable, path: str) -> list[Case]:
    try:
        cases = load_cases(path)
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    if not cases:
        raise ValueError(f"{path} registers no cases (decorate functions with "
                         "@transfuse.bench.case)")
    return cases


def _progress_printer() -> Callable[[str], None]:
    """Progress on stderr: one rewritten line on a terminal, plain lines otherwise."""
    interactive = sys.stderr.isatty()

    def show(message: str) -> None:
        if interactive:
            sys.stderr.write(f"\r\033[K{message}")
        elif message.startswith("["):  # in a log, one line per case is enough
            sys.stderr.write(f"bench: {message}\n")
        sys.stderr.flush()

    return show


def _write_outputs(args: argparse.Namespace, results: list, settings: Settings,
                   argv: list[str] | None) -> int:
    command = ["transfuse", "bench"] + list(sys.argv[1:] if argv is None else argv)
    document = to_document(results, settings, command)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(document, results))
    if args.plot:
        try:
            write_plot(results, args.plot)
        except PlotError as exc:
            print(f"transfuse bench: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_OK if document["ok"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
