"""A fuzzing campaign: `python -m tests.fuzz --minutes N [--seed S]`.

Runs the programs of seeds S, S+1, ... (each in every interpreted mode and --jit-modes
compiled ones) until the time is up, shrinks each new failure, and prints a summary:
programs and cases run, outcomes per mode, and each distinct finding with its smallest
reproducer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from . import ops_more
from .campaign import COMPLEX_SHARE, cases_for, kind_for, outcome, shrink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 1_000_000)
    parser.add_argument("--jit-modes", type=int, default=1,
                        help="compiled modes per program (each compiles: about a second)")
    parser.add_argument("--kind", choices=["pure", "smooth", "mutation", "large", "complex"])
    parser.add_argument("--complex", type=float, default=COMPLEX_SHARE, metavar="SHARE",
                        help="share of complex programs when --kind is not given "
                             "(replay one with --kind complex)")
    parser.add_argument("--quiet", action="store_true", help="no line per finding")
    parser.add_argument("--trace", action="store_true",
                        help="name each case on stderr before it runs (a crash of the "
                             "process, such as an LLVM assertion, then names its case)")
    parser.add_argument("--boost", type=float, default=1.0, metavar="FACTOR",
                        help="weight issue #16's ops (tests/fuzz/ops_more.py: sorting, "
                             "statistics, scipy.special, FFT) FACTOR times as much")
    args = parser.parse_args(argv)
    if args.boost != 1.0:
        ops_more.boost(args.boost)
    deadline = time.monotonic() + 60 * args.minutes
    counts: dict[str, Counter] = {}
    findings: dict[str, tuple] = {}
    seed, programs = args.seed, 0
    while time.monotonic() < deadline:
        for case in cases_for(seed, args.jit_modes, args.kind or kind_for(seed, args.complex)):
            if args.trace:
                print(f"case: seed {case.seed} {case.mode}", file=sys.stderr, flush=True)
            result = outcome(case)
            counts.setdefault(case.mode, Counter())[result.status] += 1
            if result.bad and result.signature() not in findings:
                small, small_result = shrink(case, result)
                findings[result.signature()] = (small, small_result)
                if not args.quiet:
                    print(f"FINDING {len(findings)} ({small_result.status}) "
                          f"{small.describe()}{small_result.message}\n", flush=True)
        programs += 1
        seed += 1
    _summary(args, seed, programs, counts, findings)
    return 1 if findings else 0


def _summary(args, seed: int, programs: int, counts: dict, findings: dict) -> None:
    total = Counter()
    for c in counts.values():
        total.update(c)
    print(f"\nseeds {args.seed}..{seed - 1}: {programs} programs, {sum(total.values())} "
          f"cases in {args.minutes:g} minutes")
    for mode in sorted(counts):
        row = ", ".join(f"{k} {v}" for k, v in sorted(counts[mode].items()))
        print(f"  {mode:22} {row}")
    print(f"  {'all':22} " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    print(f"{len(findings)} distinct findings")
    for i, (case, result) in enumerate(findings.values(), 1):
        first = result.message.splitlines()[0] if result.message else ""
        print(f"  {i}. [{case.mode}, seed {case.seed}] {result.status}: {first[:150]}")


if __name__ == "__main__":
    raise SystemExit(main())
