"""Every primitive is covered: a catalogue entry, a rule in every table, and it compiles.

For each primitive in `PRIMITIVES` (the registry itself is walked, so a new primitive
without coverage fails here, by CI, not by a user):

- tests/catalogue.py has an entry for it (sample programs and inputs);
- each transform's and backend's table has an explicit rule for it, or `NO_RULE` says why
  it needs none;
- `transfuse.jit` of its catalogue programs compiles and runs on the CPU backend and
  agrees with the reference interpreter (exactly for integers and bools);
- the CUDA backend lowers the same programs and every kernel compiles to PTX (no GPU
  needed); tests/test_cuda_sim.py runs them in numba-cuda's simulator.

Compiles are grouped: one program per catalogue family and dtype (Numba takes about a
second a program). When a family fails, its primitives are checked one at a time, so the
message names the primitive, the backend and the error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

import numpy as np
import pytest
from transfuse.ir import linalg
from transfuse.ir.errors import CompileError
from transfuse.ir.primitives import PRIMITIVES

import transfuse as tx
from tests.catalogue import (
    CATALOGUE,
    HOST_ONLY,
    NO_ENTRY,
    combined,
    copies,
    families,
    reference,
)
from tests.helpers import assert_compiled_matches, primitives_of

TABLES = {
    "JVP_RULES": ("compiler.jvp", "forward-mode (jvp)"),
    "VJP_RULES": ("compiler.vjp", "reverse-mode (vjp)"),
    "BATCH_RULES": ("compiler.batching", "batching (vmap)"),
    "LOWERING_RULES": ("compiler.lower_cpu", "CPU lowering"),
    "CUDA_LOWERING_RULES": ("compiler.lower_cuda", "CUDA lowering"),
}
TRANSFORMS = ("JVP_RULES", "VJP_RULES", "BATCH_RULES")
BACKENDS = ("LOWERING_RULES", "CUDA_LOWERING_RULES")

REMOVED = "compiler/functionalize.py's `prepare` removes it before any transform or lowering"
INLINED = "jit inlines sub-graph calls before fusion (compiler/fusion.py: inline_calls)"
PRIMAL_ONLY = ("jit replaces it by a call of its primal function before lowering "
               "(compiler/custom_calls.py)")
MADE_BY_FUSION = "made by the fusion pass, after every transform: only the backends see it"
MADE_BY_JIT = ("made by jit's optimiser (compiler/linalg_rewrites.py) after every transform: "
               "only the backends see it")
# (primitive, table) pairs that need no rule, and why.
NO_RULE: dict[str, dict[str, str]] = {
    "view_slice": dict.fromkeys(TABLES, REMOVED),
    "view_reshape": dict.fromkeys(TABLES, REMOVED),
    "view_transpose": dict.fromkeys(TABLES, REMOVED),
    "view_broadcast": dict.fromkeys(TABLES, REMOVED),
    "assign": dict.fromkeys(TABLES, REMOVED),
    "call": dict.fromkeys(BACKENDS, INLINED),
    "aot_compiled": dict.fromkeys(BACKENDS, INLINED),
    "custom_jvp_call": dict.fromkeys(BACKENDS, PRIMAL_ONLY),
    "custom_vjp_call": dict.fromkeys(BACKENDS, PRIMAL_ONLY),
    "remat": dict.fromkeys(BACKENDS, "jit inlines checkpoints before simplifying "
                                     "(compiler/remat.py: inline_remat)"),
    "fused": dict.fromkeys(TRANSFORMS, MADE_BY_FUSION),
    **{name: dict.fromkeys(TRANSFORMS, MADE_BY_JIT) for name in linalg.MADE_BY_JIT},
}
# Primitives whose catalogue programs reach the backends as other primitives.
NOT_LOWERED = {name: why for name, tables in NO_RULE.items()
               for table, why in tables.items() if table == "LOWERING_RULES"}

def table(name: str) -> dict:
    module, _ = TABLES[name]
    return getattr(importlib.import_module(f"transfuse.{module}"), name)


def rule_names(name: str) -> set[str]:
    return {getattr(p, "name", p) for p in table(name)}


# ---------------------------------------------------------------------------------------
# Entries and rules


def test_every_primitive_has_a_catalogue_entry():
    missing = sorted(set(PRIMITIVES) - set(CATALOGUE) - set(NO_ENTRY))
    assert not missing, (f"primitives without an entry in tests/catalogue.py: {missing}; add "
                         "one to CATALOGUE (sample inputs and, where needed, a program)")
    unknown = sorted((set(CATALOGUE) | set(NO_ENTRY)) - set(PRIMITIVES))
    assert not unknown, f"tests/catalogue.py has entries for unknown primitives: {unknown}"


@pytest.mark.parametrize("name", list(TABLES))
def test_every_primitive_has_a_rule(name):
    for other in TABLES:  # import every table: primitives the compiler defines are known
        table(other)
    have = rule_names(name)
    missing = sorted(p for p in PRIMITIVES if p not in have and name not in NO_RULE.get(p, {}))
    assert not missing, (f"primitives without a {TABLES[name][1]} rule in {name}: {missing}"
                         " (add one, or list it in NO_RULE with the reason)")
    needless = sorted(p for p, tables in NO_RULE.items() if name in tables and p in have)
    assert not needless, f"NO_RULE says {needless} need no {name} rule, but they have one"


def test_tables_are_keyed_by_registered_primitives():
    for name in TABLES:
        for key in table(name):
            key_name = getattr(key, "name", key)
            assert key_name in PRIMITIVES, f"{name} has a rule for unknown primitive {key!r}"
            if not isinstance(key, str):
                assert PRIMITIVES[key_name] is key, f"{name}: stale Primitive object {key!r}"


def test_every_primitive_has_a_reference_implementation_and_doc():
    for prim in PRIMITIVES.values():
        assert callable(prim.impl) and callable(prim.shape_rule), prim
        assert prim.doc, f"{prim.name} has no one-line doc"


# ---------------------------------------------------------------------------------------
# Programs: one per family and dtype, re-run per primitive to say which one fails


def assert_reaches_the_backend(pairs: Iterable[tuple[str, str]], fused_graph, backend: str
                               ) -> None:
    """The primitives were lowered themselves, not folded or rewritten away before."""
    names = {name for name, _ in pairs}
    unreached = sorted(names - set(NOT_LOWERED) - primitives_of(fused_graph))
    assert not unreached, f"{unreached} never reached the {backend} backend"


def check_cpu(pairs: list[tuple[str, str]]) -> None:
    f, args = combined(pairs)
    with np.errstate(all="ignore"):
        expected = reference(f, args)
        jitted = tx.jit(f)
        assert_compiled_matches(jitted(*copies(args)), expected)
    assert_reaches_the_backend(pairs, jitted.lower(*args).fused_graph, "CPU")


def check_refused_on_cuda(pairs: list[tuple[str, str]]) -> None:
    """A host-only family: the CUDA backend refuses it when the program is built."""
    f, args = combined(pairs)
    with np.errstate(all="ignore"), pytest.raises(CompileError, match="no CUDA kernel"):
        tx.jit(f, device="cuda", cache=False).lower(*args)


def check_ptx(pairs: list[tuple[str, str]]) -> None:
    from transfuse.runtime import cuda as cuda_runtime

    f, args = combined(pairs)
    with np.errstate(all="ignore"):
        low = tx.jit(f, device="cuda", cache=False).lower(*args)
    assert_reaches_the_backend(pairs, low.fused_graph, "CUDA")
    module = cuda_runtime.load_program(low.source, "coverage", disk=False)
    ptx = cuda_runtime.kernel_ptx(module.module, low.kernels, cc=(7, 5))
    assert set(ptx) == {k.name for k in low.kernels}
    for kernel, text in ptx.items():
        assert ".visible .entry" in text and ".target sm_75" in text, kernel


def attributed(check: Callable[[list[tuple[str, str]]], None], pairs: list[tuple[str, str]],
               backend: str) -> None:
    """Run check on a whole family; if it fails, name each primitive that fails alone."""
    try:
        check(pairs)
        return
    except Exception as family_error:  # noqa: BLE001 - re-raised below, attributed
        failures = []
        for name, dtype in pairs:
            try:
                check([(name, dtype)])
            except Exception as e:  # noqa: BLE001
                failures.append(f"{name} ({dtype}) on the {backend} backend: "
                                f"{type(e).__name__}: {str(e)[:600]}")
        if not failures:
            raise AssertionError(f"{pairs} fail together on the {backend} backend, each "
                                 f"passes alone") from family_error
        raise AssertionError("\n".join(failures)) from None


# Primitives another file compiles on the CPU in every dtype and array rank their entry
# samples, as part of one program it needs anyway: the CPU family programs leave them out
# (expm was 55 of the linalg family's 93 CPU-seconds). The CUDA checks keep them.
COMPILED_ELSEWHERE = {"expm": "tests/test_expm.py's `compiled` fixture"}
FAMILIES = families()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compiles_and_runs_on_the_cpu(family):
    pairs = [pair for pair in FAMILIES[family] if pair[0] not in COMPILED_ELSEWHERE]
    attributed(check_cpu, pairs, "CPU")


def test_what_the_cpu_families_leave_out_is_compiled_elsewhere():
    """tests/test_expm.py compiles expm in the catalogue's dtypes, stacks and single
    matrices, empty ones too, and checks every result against SciPy."""
    from tests import test_expm

    assert set(COMPILED_ELSEWHERE) == {"expm"}
    compiled = {(a.dtype.name, a.ndim, a.size > 0) for a in (*test_expm.STACKS,
                                                             *test_expm.EMPTIES)}
    for dtype in CATALOGUE["expm"].dtypes:
        for ndim in (2, 3):
            assert {(dtype, ndim, True), (dtype, ndim, False)} <= compiled, (dtype, ndim)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compiles_to_ptx(family):
    pytest.importorskip("numba_cuda")
    if family in HOST_ONLY:
        check_refused_on_cuda(FAMILIES[family])
        return
    attributed(check_ptx, FAMILIES[family], "CUDA")


# ---------------------------------------------------------------------------------------
# The checks mean what they say: a primitive with only a definition, JVP and VJP


@pytest.fixture
def bare_primitive(monkeypatch):
    """A primitive defined with its shape rule, NumPy impl, JVP and VJP rules only."""
    from transfuse.compiler.jvp import JVP_RULES
    from transfuse.compiler.vjp import VJP_RULES
    from transfuse.ir.primitives import Primitive
    from transfuse.ir.tracing import bind

    import tests.catalogue as catalogue

    prim = Primitive("bare_sin", lambda x: x, lambda x: np.sin(x), doc="sin, uncovered")
    monkeypatch.setitem(PRIMITIVES, prim.name, prim)
    monkeypatch.setitem(JVP_RULES, prim, lambda primals, tangents: (bind(prim, *primals),
                                                                   tangents[0]))
    monkeypatch.setitem(VJP_RULES, prim, lambda ct, ins, outs: [ct])
    entry = catalogue.Entry("bare", catalogue.elementwise("normal"))
    monkeypatch.setitem(catalogue.CATALOGUE, prim.name, entry)
    monkeypatch.setitem(FAMILIES, "bare", [(prim.name, "float64"), (prim.name, "float32")])
    return prim


def test_a_bare_primitive_is_reported(bare_primitive, monkeypatch):
    import tests.catalogue as catalogue

    for name in ("BATCH_RULES", "LOWERING_RULES", "CUDA_LOWERING_RULES"):
        with pytest.raises(AssertionError, match=f"without a .* rule in {name}: .*bare_sin"):
            test_every_primitive_has_a_rule(name)
    with pytest.raises(AssertionError, match=r"bare_sin \(float64\) on the CPU backend: "
                                             r"CompileError: .*CPU backend.*bare_sin"):
        test_compiles_and_runs_on_the_cpu("bare")
    with pytest.raises(AssertionError, match=r"bare_sin \(float32\) on the CUDA backend: "
                                             r"CompileError: .*CUDA backend.*bare_sin"):
        test_compiles_to_ptx("bare")
    monkeypatch.delitem(catalogue.CATALOGUE, "bare_sin")
    with pytest.raises(AssertionError, match="without an entry .*bare_sin"):
        test_every_primitive_has_a_catalogue_entry()


def test_a_bare_primitive_is_a_compile_error_naming_it(bare_primitive):
    from transfuse.ir.tracing import bind

    x = np.ones(3)
    with pytest.raises(CompileError, match="CPU backend .*bare_sin"):
        tx.jit(lambda v: bind(bare_primitive, v) * 2)(x)
    with pytest.raises(CompileError, match="CUDA backend .*bare_sin"):
        tx.jit(lambda v: bind(bare_primitive, v) * 2, device="cuda").lower(x)


def test_a_cuda_rule_calling_a_missing_helper_fails_the_ptx_check(monkeypatch):
    """A kernel importing a helper runtime/cuda_kernels.py lacks: a CompileError at load."""
    pytest.importorskip("numba_cuda")
    from transfuse.compiler.codegen import Rule
    from transfuse.compiler.lower_cuda import CUDA_LOWERING_RULES

    def point(c):
        return f"{c.helper('cu_exp2')}({c.arg(0)})"

    monkeypatch.setitem(CUDA_LOWERING_RULES, PRIMITIVES["exp"], Rule(point=point))
    with pytest.raises(AssertionError, match=r"exp \(float32\) on the CUDA backend: "
                                             r"CompileError: .*cu_exp2"):
        attributed(check_ptx, [("exp", "float32")], "CUDA")
