"""The fusion pass: which nodes share a loop, and that fusing never changes the numbers.

Most tests inspect `jit(f).lower(x)` (graph, fused graph, generated source: nothing is
compiled); fused graphs are also run on the reference interpreter (a `fused` node
interprets its sub-graph) to check they compute what the original graph computes.
"""

from __future__ import annotations

import numpy as np
import pytest
from transfuse.compiler.functionalize import prepare
from transfuse.compiler.fusion import FUSED, fuse, fused_regions
from transfuse.ir import Graph, interpret, verify

import transfuse as tx
import transfuse.numpy as tnp
from tests.helpers import rand


def regions(graph: Graph) -> list:
    return [n for n in graph.nodes if n.prim is FUSED]


def loop_nodes(node) -> list[str]:
    return [n.prim.name for n in node.params["graph"].nodes]


def fused_matches_original(f, *args):
    """fuse(graph) verifies and interprets to exactly what graph interprets to."""
    graph = prepare(tx.make_graph(f)(*args))
    fused = verify(fuse(graph))
    leaves = [np.asarray(x) for x in tx.tree_leaves(args) if isinstance(x, np.ndarray)]
    for a, e in zip(interpret(fused, leaves), interpret(graph, leaves)):
        np.testing.assert_array_equal(a, e)
    return fused


def chain10(x):
    y = np.tanh(x) * 2.0
    y = np.exp(-y) + x
    y = np.sin(y) - 0.5
    y = y * y
    y = np.sqrt(np.abs(y) + 1.0)
    return np.cos(y)


def test_a_chain_of_ten_elementwise_ops_is_one_loop():
    x = rand(np.random.default_rng(0), (1000,), "float32")
    lowered = tx.jit(chain10).lower(x)
    assert len(lowered.graph.nodes) >= 10
    (node,) = lowered.fused_graph.nodes
    assert node.prim is FUSED and node.params["kind"] == "loop"
    assert len(loop_nodes(node)) == len(lowered.graph.nodes)
    (report,) = lowered.regions
    assert report.loops == 1 and report.input_passes == {0: 1}
    # one loop in the whole kernel: 1000 points are below the parallel threshold, so the
    # loop keeps the exact sin/cos and has no trig fast-path redo (compiler/lower_cpu.py)
    assert lowered.source.count("for i0 in") == 1 and "if tfl0:" not in lowered.source
    assert "np.empty" in lowered.source and lowered.source.count("np.empty") == 1


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_softmax_is_one_region_with_at_most_two_passes_over_its_input():
    x = rand(np.random.default_rng(1), (64, 256), "float32")
    lowered = tx.jit(softmax).lower(x)
    (node,) = lowered.fused_graph.nodes
    assert node.params["reduce_axes"] == (1,)
    (report,) = lowered.regions
    assert report.input_passes[0] <= 2  # max, then exp-and-sum; the output reads a stash
    assert report.loops == 3


def layernorm(x, g, b):
    m = x.mean(-1, keepdims=True)
    xc = x - m
    v = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(v + 1e-5) * g + b


def test_layernorm_is_one_region():
    rng = np.random.default_rng(2)
    x, g, b = rand(rng, (32, 64), "float32"), rand(rng, (64,), "float32"), rand(rng, (64,),
                                                                                "float32")
    lowered = tx.jit(layernorm).lower(x, g, b)
    (node,) = lowered.fused_graph.nodes
    assert node.params["kind"] == "loop" and node.params["reduce_axes"] == (1,)
    fused_matches_original(layernorm, x, g, b)


def test_matmul_bias_activation_is_a_contraction_with_an_epilogue():
    rng = np.random.default_rng(3)
    x, w, b = rand(rng, (8, 5), "float64"), rand(rng, (5, 7), "float64"), rand(rng, (7,),
                                                                               "float64")
    lowered = tx.jit(lambda x, w, b: np.tanh(x @ w + b)).lower(x, w, b)
    (node,) = lowered.fused_graph.nodes
    assert node.params["kind"] == "contraction"
    inner = node.params["graph"].nodes
    assert inner[0].prim.name == "dot_general"
    assert inner[1].prim is FUSED and loop_nodes(inner[1]) == ["add", "tanh"]


def mlp_loss(params, x, y):
    (w1, b1), (w2, b2) = params
    h = np.tanh(x @ w1 + b1)
    return np.mean((h @ w2 + b2 - y) ** 2)


def test_per_sample_gradients_become_batched_contractions():
    rng = np.random.default_rng(4)
    params = [(rand(rng, (6, 16), "float32"), rand(rng, (16,), "float32")),
              (rand(rng, (16, 3), "float32"), rand(rng, (3,), "float32"))]
    per_sample = tx.vmap(tx.grad(mlp_loss), in_dims=(None, 0, 0))
    for batch in (8, 32):
        x, y = rand(rng, (batch, 1, 6), "float32"), rand(rng, (batch, 1, 3), "float32")
        fused = tx.jit(per_sample).lower(params, x, y).fused_graph
        dots = [n for n in _all_nodes(fused) if n.prim.name == "dot_general"]
        # The same handful of contractions at every batch size, with a batch dimension.
        assert 2 <= len(dots) <= 8
        assert any(n.params["dimension_numbers"][1][0] for n in dots)
        if batch == 8:
            count = len(dots)
        assert len(dots) == count


def _all_nodes(graph: Graph):
    for n in graph.nodes:
        yield n
        if n.prim is FUSED:
            yield from _all_nodes(n.params["graph"])


def test_shifted_slices_of_an_input_share_one_loop():
    x = rand(np.random.default_rng(5), (6, 9), "float64")
    fused = fused_matches_original(lambda a: np.abs(a[:, 1:] - a[:, :-1]), x)
    (node,) = fused.nodes
    assert sorted(loop_nodes(node)) == ["abs", "slice", "slice", "sub"]


def test_independent_consumers_of_one_input_share_a_loop():
    x = rand(np.random.default_rng(6), (50,), "float32")
    fused = fused_matches_original(lambda a: (np.sin(a), np.cos(a), a * 2), x)
    (node,) = fused.nodes
    assert len(node.outputs) == 3


def test_a_reduction_reindexed_along_another_axis_is_not_fused_into_its_loop():
    # x.sum(1)[None, :] on a square matrix: the row sums read along columns.
    x = rand(np.random.default_rng(7), (5, 5), "float64")
    fused = fused_matches_original(lambda a: a + a.sum(1)[None, :], x)
    assert len(regions(fused)) == 2
    np.testing.assert_allclose(tx.jit(lambda a: a + a.sum(1)[None, :])(x),
                               x + x.sum(1)[None, :], rtol=1e-12)


def test_reductions_over_different_axes_get_their_own_regions():
    x = rand(np.random.default_rng(8), (4, 6), "float32")
    fused = fused_matches_original(lambda a: a.sum(0).sum() + a.max(1).sum(), x)
    for node in regions(fused):
        reduce_axes = {n.params["axes"] for n in node.params["graph"].nodes
                       if n.prim.name.startswith("reduce")}
        assert len(reduce_axes) <= 1 or node.params["reduce_axes"] == ()


def test_unfused_mode_gives_one_region_per_node():
    x = rand(np.random.default_rng(9), (10,), "float32")
    graph = prepare(tx.make_graph(chain10)(x))
    unfused = verify(fuse(graph, enabled=False))
    assert len(unfused.nodes) == len(graph.nodes)


PROGRAMS = [
    (lambda a, b: (a @ b + 1, np.exp(a).sum(0) @ b), ((4, 3), (3, 2))),
    (lambda a, b: np.concatenate([a, np.tanh(a)], 0) @ b, ((4, 3), (3, 2))),
    (lambda a, b: ((a @ b) * (a @ b).sum(), a.T @ a), ((4, 3), (3, 2))),
    (lambda a, b: (a * 2)[::-1] + (a * 3).max(0), ((4, 3), (3, 2))),
    (lambda a, b: tnp.logsumexp(a, axis=1) + np.cumsum(a, 1)[:, 0], ((4, 3), (3,))),
    (lambda a, b: np.where(a > 0, a, b[:, None]).reshape(12) * 2, ((4, 3), (4,))),
    (lambda a, b: (np.sin(a) @ b, np.cos(a).T, np.sin(a).sum()), ((3, 3), (3, 3))),
]


@pytest.mark.parametrize("program,shapes", PROGRAMS)
def test_fused_graphs_compute_what_the_original_computes(program, shapes):
    rng = np.random.default_rng(10)
    args = [rand(rng, s, "float64") for s in shapes]
    fused = fused_matches_original(program, *args)
    for node in fused_regions(fused):
        verify(node.params["graph"])


def test_fused_graphs_print_their_regions():
    x = rand(np.random.default_rng(11), (8, 4), "float32")
    text = str(tx.jit(softmax).lower(x).fused_graph)
    assert "fused[graph=" in text and "reduce_max" in text and "graph loop" in text


def test_generated_source_names_the_users_lines_and_compiles_to_the_same_numbers():
    x = rand(np.random.default_rng(12), (16, 8), "float32")
    lowered = tx.jit(softmax).lower(x)
    assert "test_fusion.py" in lowered.source
    assert "# exp @ test_fusion.py" in lowered.source
    text = str(lowered)
    assert "generated source" in text and "fused graph" in text
    np.testing.assert_allclose(tx.jit(softmax)(x), softmax(x), rtol=2e-6, atol=1e-7)


def test_leading_axis_reductions_run_column_wise_in_one_pass():
    # Batch-norm statistics: mean over the batch, then the variance around it.
    x = rand(np.random.default_rng(13), (64, 48), "float32")

    def batchnorm(a):
        return (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5)

    lowered = tx.jit(batchnorm).lower(x)
    reducing = [n for n in lowered.fused_graph.nodes if n.prim is FUSED
                and n.params.get("reduce_axes") == (0,)]
    assert len(reducing) == 2  # the mean, then the variance: one pass each
    assert "ra0[i1] = ra0[i1] +" in lowered.source  # accumulated across columns
    for report in lowered.regions:
        assert report.loops <= 2
    fused_matches_original(batchnorm, x)
    np.testing.assert_allclose(tx.jit(batchnorm)(x), batchnorm(x), rtol=1e-4, atol=1e-5)


def test_an_epilogue_writes_into_the_contraction_result_in_place():
    rng = np.random.default_rng(14)
    x, w, b = rand(rng, (8, 5), "float64"), rand(rng, (5, 7), "float64"), rand(rng, (7,),
                                                                               "float64")
    f = tx.jit(lambda x, w, b: np.tanh(x @ w + b) * 2)
    assert "# written in place" in f.lower(x, w, b).source
    np.testing.assert_allclose(f(x, w, b), np.tanh(x @ w + b) * 2, rtol=1e-12)


def test_a_large_reduction_to_a_scalar_goes_by_rows():
    x = rand(np.random.default_rng(15), (512, 300), "float32")
    lowered = tx.jit(lambda a: (a * a).sum()).lower(x)
    axes = [n.params["reduce_axes"] for n in lowered.fused_graph.nodes if n.prim is FUSED]
    assert axes == [(1,), (0,)]  # the rows in parallel, then the 512 row sums
    np.testing.assert_allclose(tx.jit(lambda a: (a * a).sum())(x), (x * x).sum(), rtol=1e-5)


def test_a_vmapped_matmul_is_one_blas_call_over_the_batch_without_copies():
    rng = np.random.default_rng(16)
    w, x = rand(rng, (6, 40, 30), "float32"), rand(rng, (20, 40), "float32")
    f = tx.vmap(lambda w, x: x @ w, in_dims=(0, None))  # x @ w for each of 6 stacked w
    source = tx.jit(f).lower(w, x).source
    (call,) = [line for line in source.splitlines() if "gemm_strided(" in line]
    assert "BLAS: 6 x (20x40 @ 40x30)" in call  # one call, a loop over the batch inside it
    assert "in the order BLAS needs" not in source  # no operand copied
    body = source[source.index("def entry"):]
    assert "for " not in body.split("gemm_strided(")[0].split("# -- region")[-1]
    np.testing.assert_allclose(tx.jit(f)(w, x), np.einsum("nk,bkm->bnm", x, w), rtol=1e-5,
                               atol=1e-5)


def test_batched_matmul_with_the_batch_in_the_middle_needs_no_copy():
    rng = np.random.default_rng(17)
    a, b = rand(rng, (20, 5, 30), "float64"), rand(rng, (30, 5, 25), "float64")
    f = lambda a, b: np.einsum("mbk,kbn->bmn", a, b)  # noqa: E731
    source = tx.jit(f).lower(a, b).source
    assert source.count("gemm_strided(") == 1 and "in the order BLAS needs" not in source
    np.testing.assert_allclose(tx.jit(f)(a, b), f(a, b), rtol=1e-12)


def outer_jacobians(a, x, b, y):
    """An NTK-like contraction of two per-example outer products (einsum outer, reshape)."""
    j1 = np.einsum("nak,np->napk", a, x).reshape(a.shape[0], a.shape[1], -1)
    j2 = np.einsum("mbk,mp->mbpk", b, y).reshape(b.shape[0], b.shape[1], -1)
    return np.einsum("naf,mbf->nmab", j1, j2)


def test_a_contraction_of_outer_products_is_factored():
    rng = np.random.default_rng(18)
    a, b = rand(rng, (4, 3, 16), "float64"), rand(rng, (5, 3, 16), "float64")
    x, y = rand(rng, (4, 24), "float64"), rand(rng, (5, 24), "float64")
    graph = prepare(tx.make_graph(outer_jacobians)(a, x, b, y))
    fused = verify(fuse(graph))
    big = [n for n in _all_nodes(graph) if n.prim.name == "dot_general"]
    assert max(n.inputs[0].aval.size for n in big) == 4 * 3 * 24 * 16  # the outer product
    dots = [n for n in _all_nodes(fused) if n.prim.name == "dot_general"]
    # (a . b) over k and (x . y) over p: no outer product is formed any more
    assert sorted(n.outputs[0].aval.shape for n in dots) == [(4, 3, 5, 3), (4, 5)]
    for got, want in zip(interpret(fused, [a, x, b, y]), interpret(graph, [a, x, b, y])):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_contraction_of_outer_products_that_does_not_split_is_kept():
    rng = np.random.default_rng(19)
    a, x = rand(rng, (3, 4, 5), "float64"), rand(rng, (3, 6), "float64")
    b, y = rand(rng, (2, 4), "float64"), rand(rng, (2, 5, 6), "float64")

    def f(a, x, b, y):  # k1 pairs a with b, k2 a with y, p x with y: one connected sum
        j1 = np.einsum("nij,np->nijp", a, x).reshape(3, -1)
        j2 = np.einsum("mi,mjp->mijp", b, y).reshape(2, -1)
        return j1 @ j2.T
    graph = prepare(tx.make_graph(f)(a, x, b, y))
    fused = fused_matches_original(f, a, x, b, y)
    sizes = [n.inputs[0].aval.size for n in _all_nodes(fused) if n.prim.name == "dot_general"]
    assert 3 * 4 * 5 * 6 in sizes
    assert len(graph.nodes) > 0


def test_a_factored_contraction_the_graph_already_has_is_computed_once():
    rng = np.random.default_rng(20)
    a, b = rand(rng, (4, 3, 16), "float64"), rand(rng, (5, 3, 16), "float64")
    x, y = rand(rng, (4, 24), "float64"), rand(rng, (5, 24), "float64")

    def f(a, x, b, y):  # the bias part of an NTK repeats the factor a . b
        return outer_jacobians(a, x, b, y) + np.einsum("nak,mbk->nmab", a, b)
    graph = prepare(tx.make_graph(f)(a, x, b, y))
    fused = verify(fuse(graph))
    shapes = [n.outputs[0].aval.shape for n in _all_nodes(fused) if n.prim.name == "dot_general"]
    assert sorted(shapes) == [(4, 3, 5, 3), (4, 5)]
    for got, want in zip(interpret(fused, [a, x, b, y]), interpret(graph, [a, x, b, y])):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
