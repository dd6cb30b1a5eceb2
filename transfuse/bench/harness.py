"""Running cases: the reference, each system checked against it, then timed."""

from __future__ import annotations

import gc
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .check import compare
from .core import (
    BASELINE_FAMILIES,
    Absent,
    Case,
    Runner,
    Skipped,
    Unavailable,
    import_transfuse,
    to_numpy,
)
from .timing import Timing, measure


@dataclass
class Settings:
    """How to run: sizes, repetitions, which baselines, where progress goes."""

    quick: bool = False
    repeat: int = 7
    warmup: int = 2
    min_sample_s: float = 0.01
    budget_s: float = 10.0  # per system and case, for samples beyond the minimum
    # A pause before each system's timing: BLAS's and OpenMP's threads spin for a while
    # after a call (OpenBLAS's about 0.2 s here), and the previous system's check ran
    # just before; spinning threads took a core from the next system's own threads.
    settle_s: float = 0.3
    baselines: frozenset[str] = frozenset({"numpy", "numba", "jax", "torch", "torch.compile"})
    progress: Callable[[str], None] = field(default=lambda message: None)


@dataclass
class SystemResult:
    """One system on one case: its status, why, its agreement and its timing."""

    status: str  # ok | absent | unavailable | skipped | error | mismatch
    reason: str | None = None
    max_error: float | None = None
    timing: Timing | None = None
    ratio: float | None = None
    first_call_s: float | None = None  # preparing excluded: the call that compiles


@dataclass
class CaseResult:
    """One case: where its reference came from and every system's result."""

    case: Case
    reference: str  # transfuse-interpreter | numpy | another system's name | none
    reference_note: str | None
    systems: dict[str, SystemResult]
    reference_failed: bool = False

    @property
    def failed(self) -> bool:
        bad = {"error", "mismatch"}
        return self.reference_failed or any(r.status in bad for r in self.systems.values())


# ---------------------------------------------------------------------------------------


def run_cases(cases: list[Case], settings: Settings) -> list[CaseResult]:
    """Run every case in turn, reporting progress as it goes."""
    results = []
    for i, case in enumerate(cases, 1):
        settings.progress(f"[{i}/{len(cases)}] {case.full_name}")
        results.append(run_case(case, settings))
        gc.collect()  # large inputs of one case should not crowd the next
    return results


def run_case(case: Case, settings: Settings) -> CaseResult:
    """Check every system of the case against the reference, then time the ones that agree."""
    try:
        inputs = case.setup()
    except Exception as exc:  # a broken case is a failure of the case, not of the run
        return CaseResult(case, "none", f"setup failed: {_describe(exc, trace=True)}", {},
                          reference_failed=True)
    reference, source, note = _reference(case, inputs)
    failed = source == "error"
    if reference is None:
        reference, source = _numpy_reference(case, inputs)
    runners: dict[str, Runner] = {}
    results: dict[str, SystemResult] = {}
    for name, factory in _systems(case, settings):
        settings.progress(f"{case.full_name}: checking {name}")
        result, runner, output = _prepare(name, factory, inputs, settings)
        if runner is not None:
            if reference is None:  # nothing better: the first system that ran
                reference, source = output, name
            result = _check(result, output, reference, case)
            runners[name] = runner
        results[name] = result
        del output  # per-sample gradients are large: keep one result at a time
    for name, runner in runners.items():
        if results[name].status == "ok" and results[name].timing is None:
            settings.progress(f"{case.full_name}: timing {name}")
            time.sleep(settings.settle_s)
            results[name].timing = _time(runner, settings)
    _add_ratios(results)
    return CaseResult(case, source, note, results, reference_failed=failed)


def _systems(case: Case, settings: Settings) -> list[tuple[str, Any]]:
    """The systems of a case, transfuse first, baselines filtered by --baselines."""
    chosen = [("transfuse", case.transfuse_system or _transfuse_factory(case))]
    chosen += [(name, f) for name, f in case.baselines.items() if _selected(name, settings)]
    return chosen


def _selected(system: str, settings: Settings) -> bool:
    """Known baselines run when --baselines names them; a user's own baselines always run."""
    return system not in BASELINE_FAMILIES or system in settings.baselines


def _transfuse_factory(case: Case) -> Callable[[tuple], Runner]:
    def factory(inputs: tuple) -> Runner:
        tx = _import_for(case, with_jit=True)
        fn = _safely_build(case, tx)
        jitted = tx.jit(fn, **case.jit_kwargs)
        return Runner(call=lambda: jitted(*inputs))

    return factory


def _import_for(case: Case, *, with_jit: bool) -> Any:
    if case.transform is None:
        raise Unavailable("this case has no transfuse implementation")
    return import_transfuse(case.needs + (("jit",) if with_jit else ()))


def _safely_build(case: Case, tx: Any) -> Callable:
    try:
        return case.transform(tx)
    except AttributeError as exc:  # a public name used by the case has not landed yet
        raise Unavailable(str(exc)) from None


# ---------------------------------------------------------------------------------------
# The reference


def _reference(case: Case, inputs: tuple) -> tuple[Any, str, str | None]:
    """(value, where it came from, note); value None when transfuse cannot give one yet."""
    try:
        tx = _import_for(case, with_jit=False)
        fn = _safely_build(case, tx)
        value = _interpret(fn, inputs) if case.plain else fn(*inputs)
        return to_numpy(value), case.reference_label, None
    except Unavailable as exc:
        return None, "", f"transfuse reference unavailable: {exc}"
    except NotImplementedError as exc:
        return None, "", f"transfuse reference unavailable: {_describe(exc)}"
    except Exception as exc:
        return None, "error", f"transfuse reference failed: {_describe(exc, trace=True)}"


def _interpret(fn: Callable, inputs: tuple) -> Any:
    """Trace fn and run its graph on transfuse's reference interpreter."""
    try:
        from transfuse._staging import execute, stage, unflatten_outputs
    except ImportError:  # staging moved: eager NumPy computes the same function
        return fn(*inputs)
    staged = stage(fn, inputs)
    outs = execute(staged.graph, staged.dyn_args, staged.implicit)
    return unflatten_outputs(staged.out_tree, outs)


def _numpy_reference(case: Case, inputs: tuple) -> tuple[Any, str]:
    """Without transfuse's reference: NumPy eager's result, (None, "none") without one."""
    if "numpy" not in case.baselines:
        return None, "none"
    try:
        runner = case.baselines["numpy"](inputs)
        return runner.fetch(runner.call()), "numpy"
    except Exception:  # the numpy column will report the error itself
        return None, "none"


# ---------------------------------------------------------------------------------------
# One system


def _prepare(name: str, factory: Callable[[tuple], Runner], inputs: tuple,
             settings: Settings) -> tuple[SystemResult, Runner | None, Any]:
    """Build the system and run it once (compiling it); (result, runner, output)."""
    try:
        if settings.quick and name == "torch.compile":
            raise Skipped("torch.compile is not run under --quick (its first compile "
                          "takes ~15 s)")
        runner = factory(inputs)
        if runner.measure is not None:  # times itself; its result comes with the timing
            samples, raw = runner.measure(settings.repeat if not settings.quick else 1)
            return SystemResult("ok", timing=Timing.of(samples)), runner, runner.fetch(raw)
        start = time.perf_counter()
        raw = runner.call()
        first_call_s = time.perf_counter() - start
        return SystemResult("ok", first_call_s=first_call_s), runner, runner.fetch(raw)
    except Absent as exc:
        return SystemResult("absent", str(exc)), None, None
    except Skipped as exc:
        return SystemResult("skipped", str(exc)), None, None
    except Unavailable as exc:
        return SystemResult("unavailable", str(exc)), None, None
    except NotImplementedError as exc:
        return SystemResult("unavailable", _describe(exc)), None, None
    except Exception as exc:
        if name == "torch.compile":  # "where it works": a failing torch.compile is a gap
            return SystemResult("unavailable", f"torch.compile failed: {_describe(exc)}"), \
                None, None
        return SystemResult("error", _describe(exc, trace=True)), None, None


def _check(result: SystemResult, output: Any, reference: Any, case: Case) -> SystemResult:
    if reference is None:
        return result
    verdict = compare(output, reference, rtol=case.rtol, atol=case.atol)
    result.max_error = verdict.max_error
    if not verdict.ok:
        result.status, result.reason, result.timing = "mismatch", verdict.message, None
    return result


def _time(runner: Runner, settings: Settings) -> Timing | None:
    return measure(runner.call, repeat=settings.repeat, warmup=settings.warmup,
                   min_sample_s=settings.min_sample_s, budget_s=settings.budget_s)


def _add_ratios(results: dict[str, SystemResult]) -> None:
    """ratio = system median / transfuse median: above 1 means transfuse is faster."""
    base = results.get("transfuse")
    if base is None or base.timing is None or base.timing.median_s <= 0:
        return
    for result in results.values():
        if result.timing is not None:
            result.ratio = result.timing.median_s / base.timing.median_s


def _describe(exc: BaseException, *, trace: bool = False) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    if trace:
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}"
                          for f in frames)
        text += f" [at {where}]"
    return text


def print_failure(result: CaseResult, stream: Any = None) -> None:
    """A loud account of what failed in a case."""
    stream = stream or sys.stderr
    print(f"FAILED {result.case.full_name} (reference: {result.reference or 'none'})",
          file=stream)
    if result.reference_failed and result.reference_note:
        print(f"  reference: {result.reference_note}", file=stream)
    for name, r in result.systems.items():
        if r.status in ("error", "mismatch"):
            print(f"  {name}: {r.status.upper()}: {r.reason}", file=stream)
