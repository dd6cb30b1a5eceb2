"""`pytest --jit` in the normal suite: a fixed sample of the core, autodiff and vmap tests
rerun with jit wrapped around the function under test (tests/conftest.py).

The whole --jit run compiles thousands of kernels and takes far longer than the suite's
budget (its command and last result are in docs/compiler.md), so CI reruns this
deterministic sample of it in a subprocess: every wrapped entry point (traced, interpret,
grad, jacrev, jacfwd, hessian, vmap, functionalize, jvp, vjp, linearize) and every file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import transfuse as tx
from tests.helpers import JIT_MODE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLE = [
    # the core: primitives through `traced`, graphs through `interpret`
    "tests/test_opinfo.py::test_eager_tracing_matches_the_reference[np.tanh-float32]",
    "tests/test_opinfo.py::test_eager_tracing_matches_the_reference[np.fmin-float32]",
    "tests/test_primitives.py::test_gather_scatter_primitives",
    "tests/test_tracing.py::test_simplify_keeps_negative_zero_semantics",
    "tests/test_functionalize.py::test_call_nodes_that_mutate_are_inlined",
    "tests/test_functionalize.py::test_repeat_calls_reuse_the_graph_and_write_back_each_time",
    "tests/test_functionalize.py::test_non_contiguous_arguments_are_written_back_in_place",
    "tests/test_regressions.py::test_where_reproducer",
    "tests/test_regressions.py::test_gradients_of_masked_reductions",
    # forward mode: jvp, linearize, jacfwd
    "tests/test_opinfo.py::test_jvp_matches_finite_differences[np.fmin-float32]",
    "tests/test_opinfo.py::test_jvp_matches_finite_differences[np.sum-float64]",
    "tests/test_jvp.py::test_max_ties_split_the_tangent_in_half",
    "tests/test_jvp.py::test_jvp_graph_layout_and_symbolic_zeros",
    "tests/test_forward_api.py::test_identity_outputs_do_not_alias_arguments",
    "tests/test_forward_api.py::test_linearize_tangent_graph_does_not_recompute_primals",
    "tests/test_forward_api.py::test_jacfwd_is_batched_not_unrolled",
    "tests/test_forward_api.py::test_tangent_mismatches_are_clear_errors",
    # reverse mode: vjp, grad, jacrev
    "tests/test_opinfo.py::test_vjp_matches_finite_differences[np.tanh-float64]",
    "tests/test_vjp.py::test_products_with_zeros_are_exact",
    "tests/test_reverse_api.py::test_results_never_alias_arguments_or_cotangents",
    "tests/test_reverse_api.py::test_random_draws_are_shared_by_forward_and_backward",
    "tests/test_reverse_api.py::test_vjp_runs_the_forward_computation_once",
    # vmap
    # (np.add's in-place form: a write into a batched argument, broadcasting, unbatched
    # operands; 10 compiles where np.add's 49 batching patterns took a third of the sample)
    "tests/test_opinfo.py::test_vmap_matches_a_loop[ndarray.__iadd__-float32]",
    "tests/test_vmap.py::test_batch_graph_keeps_unbatched_inputs_and_reports_out_dims",
    "tests/test_vmap.py::test_grad_of_vmap",
    "tests/test_vmap_api.py::test_chunks_with_batch_dim_not_leading_and_grad",
    # the harness itself
    "tests/test_jit_mode.py::test_the_harness_wraps_every_entry_point_only_under_jit",
]

WRAPPED = ("grad", "grad_and_value", "jacrev", "jacfwd", "hessian", "vmap", "functionalize",
           "jvp", "vjp", "linearize")


def test_the_harness_wraps_every_entry_point_only_under_jit():
    import transfuse.ir

    from tests import helpers

    for name in WRAPPED:
        assert hasattr(getattr(tx, name), "__wrapped__") == JIT_MODE, name
    assert (transfuse.ir.interpret is not transfuse.ir.interpreter.interpret) == JIT_MODE
    assert (helpers.traced.__name__ == "traced_with_jit") == JIT_MODE
    if JIT_MODE:  # what comes back compiles: a jitted function, a signature in its cache
        g = tx.grad(lambda x: (x * x).sum())
        assert hasattr(g, "__transfuse_jit__")
        assert tx.grad(g) is not g


def test_a_sample_of_the_suite_passes_under_jit():
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "--jit", "-p", "no:randomly",
                          *SAMPLE], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert f"{len(SAMPLE)} passed" in run.stdout, tail
