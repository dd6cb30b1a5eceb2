"""A map of a scalar while_loop (batching's per-lane solver) as blocks of lanes in lockstep.

Batching turns a while_loop with a batched predicate into a map over lanes of the
unbatched loop; lowered one lane at a time, each iteration waits on the previous one.
Here LANE_BLOCK lanes run together, as JAX's masked loop does: their carries are small
local arrays, each round applies one body step to every lane of the block and keeps the
new value only where the lane is still active, and a lane leaves when its cond is false;
the rounds end when none is active. The inner loop over the block has a fixed trip count
and no branch, so LLVM turns it into SIMD code. Each lane computes exactly its own
iterations (the same scalar functions on the same values), so the results are
bit-identical to the per-lane loop. The last block's missing lanes repeat the block's first
lane and are never active. See docs/compiler.md "Control flow".
"""

from __future__ import annotations

import re

from transfuse.ir.core import Graph, Node

LANE_BLOCK = 8  # lanes run in lockstep (measured: docs/performance.md, control flow)
ENABLED = True  # False: one lane at a time (the benchmark's "before")


def lockstep_while(body: Graph) -> Node | None:
    """The while_loop node if the (optimised) map body is exactly one while_loop reading
    the body's inputs and returning its final carries, else None."""
    if len(body.nodes) != 1 or body.consts:
        return None
    return _last_while(body)


def _last_while(body: Graph) -> Node | None:
    """The body's last node if it is a while_loop the body's outputs all come from."""
    if not body.nodes or body.nodes[-1].prim.name != "while_loop":
        return None
    node = body.nodes[-1]
    return node if all(v in node.outputs for v in body.outputs) else None


def split_prefix(body: Graph) -> tuple[Graph, Node] | None:
    """(the nodes before the loop as a graph of the body's inputs returning the loop's other
    operands, the loop) for a body `prefix; while_loop` (an initial carry computed from the
    lane, `1.0 + a`), else None."""
    loop = _last_while(body)
    if loop is None or len(body.nodes) < 2:
        return None
    made = {v for n in body.nodes[:-1] for v in n.outputs}
    computed = list(dict.fromkeys(v for v in loop.inputs if v not in body.inputs))
    if not all(v in made or v in body.consts for v in computed):
        return None
    prefix = Graph(list(body.inputs), list(body.nodes[:-1]), computed, dict(body.consts))
    return prefix, loop


def block_kernel(name: str, options: str, body: Graph, loop: Node, cond, step,
                 lane_inputs: list[bool], prefix=None) -> list[str]:
    """`def name(fixed..., i0, i1, ..., y0, y1, ..., lo)` running lanes lo... (at most
    LANE_BLOCK of them, fewer at the end) in lockstep; input k is a stack read at the lane
    when lane_inputs[k], else a number (`u{k}`), as are the constants; cond and step are
    the loop's scalar callees; prefix, if given, is (callee, the loop operands it returns)
    computing operands from the lane's inputs. Each lane's values are locals of their own
    (`k{m}_{lane}`, unrolled: independent chains the CPU overlaps and LLVM may pack into
    SIMD)."""
    p = loop.params
    ncc, nbc = p["cond_nconsts"], p["body_nconsts"]
    ins = [f"i{k}" if lane else f"u{k}" for k, lane in enumerate(lane_inputs)]
    ys = [f"y{k}" for k in range(len(body.outputs))]
    first = lane_inputs.index(True)
    lines = [f"    n = min(i{first}.shape[0] - lo, {LANE_BLOCK})"]
    carries = loop.outputs
    rounds = []
    for j in range(LANE_BLOCK):
        # a missing lane of the last block repeats lane 0 and is never active
        lines.append(f"    q{j} = lo + ({j} if {j} < n else 0)")
        value = {v: f"i{k}[q{j}]" if lane else f"u{k}"
                 for k, (v, lane) in enumerate(zip(body.inputs, lane_inputs))}
        if prefix is not None:
            callee, computed = prefix
            results = [f"r{m}_{j}" for m in range(len(computed))]
            args = [(value[v], value[v]) for v in body.inputs]
            lines.append(f"    {callee.call(args, [(r, r) for r in results])}")
            value.update(zip(computed, results))
        operands = [value[v] for v in loop.inputs]
        cond_consts, body_consts = operands[:ncc], operands[ncc:ncc + nbc]
        carry = [f"k{m}_{j}" for m in range(len(carries))]
        lines += [f"    {c} = {x}" for c, x in zip(carry, operands[ncc + nbc:])]
        test = cond.value([(x, x) for x in cond_consts + carry])
        lines.append(f"    a{j} = ({j} < n) and ({test})")
        new = [f"s{m}_{j}" for m in range(len(carries))]
        # One output comes back as a number, several as a tuple (_Callee.call).
        rounds.append("        " + step.call([(x, x) for x in body_consts + carry],
                                             [(s, s) for s in new]))
        rounds += [f"        {c} = {x} if a{j} else {c}" for c, x in zip(carry, new)]
        rounds.append(f"        a{j} = a{j} & ({test})")
    active = " | ".join(f"a{j}" for j in range(LANE_BLOCK))
    lines += [f"    while {active}:", *rounds]
    for j in range(LANE_BLOCK):
        lines.append(f"    if {j} < n:")
        lines += [f"        {y}[lo + {j}] = k{carries.index(v)}_{j}"
                  for y, v in zip(ys, body.outputs)]
    return [f"@njit({options})", f"def {name}(FIXED{', '.join(ins + ys)}, lo):",
            "    # lanes of a mapped while_loop in lockstep blocks", *lines]


_CONST_READ = re.compile(r"(?<![.\w])(c\d+)\[\(\)\]")  # c3[()] -> c3: constants as numbers


def emit_lockstep(lowering, node: Node, ys: list[str], parallel: bool) -> bool:
    """Emit a map node (a scan without carry) whose body is a scalar while_loop as calls of
    a block kernel, one per LANE_BLOCK lanes (in prange when parallel); False (nothing
    emitted) when the body has another form."""
    from .lower_control import _fixed_names, _function, _optimised

    if not ENABLED:
        return False
    scan = node.params
    body, prefix = _optimised(scan["body"]), None
    loop = lockstep_while(body)
    if loop is None:
        split = split_prefix(scan["body"])
        if split is None:
            return False
        body, (graph, loop) = scan["body"], split
        prefix = (_function(lowering, graph, "lockstep lanes' initial operands"), graph.outputs)
        if not prefix[0].scalar:
            return False
    cond = _function(lowering, loop.params["cond_graph"], "while_loop cond")
    step = _function(lowering, loop.params["body_graph"], "while_loop body")
    if not (cond.scalar and step.scalar):
        return False
    nc = scan["num_consts"]
    lane_inputs = [k >= nc for k in range(len(body.inputs))]
    if not any(lane_inputs):
        return False
    root = lowering.root
    name = f"flow{len(root.function_names)}"
    lines = block_kernel(name, lowering.options(lowering.cache), body, loop, cond, step,
                         lane_inputs, prefix)
    lines = [_CONST_READ.sub(r"\1", line) for line in lines]
    fixed = _fixed_names(lines[2:])
    if any(not f.startswith("c") for f in fixed):
        return False
    lines[1] = lines[1].replace("FIXED", "".join(f"{f}, " for f in fixed))
    root.function_names.add(name)
    root.functions.append(lines + [""])
    names = [lowering.names[v] for v in node.inputs]
    numbers = [f"{f}[()]" for f in fixed] + [f"{n}[()]" for n, lane in
                                              zip(names, lane_inputs) if not lane]
    # 0-d arrays are read before the loop: Numba's parfors pass them into its body as numbers
    hoisted = [f"    v{k} = {n}" for k, n in enumerate(numbers)]
    numbered = iter(f"v{k}" for k in range(len(numbers)))
    args = [next(numbered) for _ in fixed]
    args += [n if lane else next(numbered) for n, lane in zip(names, lane_inputs)]
    length, size = scan["length"], LANE_BLOCK
    loop_kind = "prange" if parallel else "range"
    call = f"{name}({', '.join(args + ys)}, blk * {size})"
    statements = hoisted + [f"    for blk in {loop_kind}(({length} + {size - 1}) // {size}):",
                            f"        {call}"]
    if parallel:
        from .region_functions import RegionBody

        lowering.program.uses_prange = True
        lowering.body.append(RegionBody(statements, parallel=True))
    else:
        lowering.body += statements
    return True
