"""Cases from seeds, their outcomes, and shrinking a failing case."""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

import transfuse as tx

from . import control_ops  # noqa: F401  (adds lax control flow to the op tables)
from .complex_ops import generate_complex
from .ops import generate
from .oracles import MODES, Case, Mismatch, OracleSkip, modes_for, run_case
from .programs import Program

KINDS = {"pure": 0.42, "smooth": 0.3, "mutation": 0.25, "large": 0.03}
COMPLEX_SHARE = 0.2  # of a campaign's programs, complex ones (--complex)
# transfuse's own source folders: an exception raised from inside them is transfuse's
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TRANSFUSE_DIRS = tuple(os.path.join(_ROOT, d) + os.sep
                        for d in ("ir", "compiler", "runtime", "transfuse"))


def program_for(seed: int, kind: str | None = None) -> Program:
    """The program a seed stands for (its kind and float dtype drawn from the seed too)."""
    rng = np.random.default_rng([seed, 1])
    kind = kind or str(rng.choice(list(KINDS), p=list(KINDS.values())))
    dtype = np.float64 if kind == "smooth" or rng.random() < 0.5 else np.float32
    if kind == "complex":
        return generate_complex(rng, dtype)
    return generate(rng, kind, dtype)


def kind_for(seed: int, complex_share: float = COMPLEX_SHARE) -> str | None:
    """A campaign's kind for a seed: 'complex' for a share of them, else drawn as before."""
    return "complex" if np.random.default_rng([seed, 3]).random() < complex_share else None


def cases_for(seed: int, jit_modes: int = 1, kind: str | None = None) -> Iterator[Case]:
    """Every cheap (interpreted) mode of the seed's program, and some jit modes."""
    program = program_for(seed, kind)
    modes = modes_for(program)
    cheap = [m for m in modes if "jit" not in m]
    jitted = [m for m in modes if "jit" in m]
    rng = np.random.default_rng([seed, 2])
    picked = list(rng.choice(jitted, size=min(jit_modes, len(jitted)), replace=False))
    for mode in cheap + [str(m) for m in picked]:
        yield Case(program, mode, seed)


@dataclass
class Outcome:
    status: str  # 'pass', 'fail' (wrong answer), 'error' (transfuse raised), 'unsupported',
    # 'skip' (the oracle cannot judge the case)
    message: str = ""

    @property
    def bad(self) -> bool:
        return self.status in ("fail", "error")

    def signature(self) -> str:
        """What identifies the same finding: the status and the message's first line (hex
        names, such as a generated kernel's, made alike)."""
        first = self.message.splitlines()[0] if self.message else ""
        return f"{self.status}: {re.sub(r'[0-9a-f]{12,}', '#', first)}"


def outcome(case: Case) -> Outcome:
    try:
        run_case(case)
    except Mismatch as e:
        return Outcome("fail", str(e))
    except OracleSkip as e:
        return Outcome("skip", str(e))
    except tx.UnsupportedError as e:
        return Outcome("unsupported", f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - any exception is a finding or an oracle's limit
        if _raised_in_transfuse(e):
            return Outcome("error", f"{type(e).__name__}: {e}")
        return Outcome("skip", f"oracle raised {type(e).__name__}: {e}")
    return Outcome("pass")


def _raised_in_transfuse(e: BaseException) -> bool:
    frames = traceback.extract_tb(e.__traceback__)
    return any(f.filename.startswith(_TRANSFUSE_DIRS) for f in frames) or \
        isinstance(e, tx.TransfuseError)


# ---------------------------------------------------------------------------------------
# shrinking


def shrink(case: Case, found: Outcome, budget: int = 60) -> tuple[Case, Outcome]:
    """A smaller case failing the same way: statements, outputs and inputs removed."""
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        for smaller in _candidates(case.program):
            tries += 1
            candidate = Case(smaller, case.mode, case.seed)
            result = outcome(candidate)
            if result.signature() == found.signature() or \
                    result.bad and result.status == found.status and found.status == "fail":
                case, found, changed = candidate, result, True
                break
            if tries >= budget:
                break
    return case, found


def _candidates(program: Program) -> Iterator[Program]:
    lines, outputs = program.lines, program.outputs
    if len(outputs) > 1:
        for k in range(len(outputs)):
            yield _prune(program.with_lines(lines, outputs[:k] + outputs[k + 1:]))
    for k in reversed(range(len(lines))):
        kept = lines[:k] + lines[k + 1:]
        defined = _defined(lines[k])
        if defined not in outputs:
            yield _prune(program.with_lines(kept, outputs))
            continue
        earlier = [_defined(line) for line in lines[:k] if _defined(line)]
        if earlier:  # the output becomes the value defined before it
            yield _prune(program.with_lines(kept, [earlier[-1] if o == defined else o
                                                   for o in outputs]))


def _defined(line: str) -> str | None:
    """The name a statement assigns (None for an in-place write)."""
    match = re.match(r"(v\d+) = ", line)
    return match.group(1) if match else None


def _prune(program: Program) -> Program:
    """Drop the inputs no statement or output uses (the program must keep one)."""
    text = "\n".join(program.lines + program.outputs)
    used = [v for v in program.inputs if _mentions(text, v.name)] or program.inputs[:1]
    return replace(program, inputs=used)


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"\b{name}\b", text) is not None


__all__ = ["MODES", "Case", "Outcome", "cases_for", "kind_for", "outcome", "program_for",
           "shrink"]
