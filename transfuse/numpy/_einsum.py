"""np.einsum and np.einsum_path on traced values, in every form NumPy accepts.

Both the subscripts string and the interleaved (operand, sublist, ..., [output]) form are
parsed to one list of integer labels per operand (a letter's label is its character code;
ellipsis dimensions get labels of their own). Then:
1. each operand alone: a repeated label becomes its diagonal (the repeated axes moved last,
   merged by a reshape, read by a strided slice: primitives with every rule), a size-1 axis
   broadcast against a larger size of its label is dropped, and a label that neither the
   output nor another operand holds is summed;
2. the operands are contracted pairwise in the order opt_einsum chooses (or the path that
   `optimize=` gives), each pair by one dot_general — one BLAS call on CPU;
3. a transpose puts the labels in the output's order.
A single operand with nothing summed is a view of it, as in NumPy. docs/numpy.md, "einsum".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transfuse.ir import lax
from transfuse.ir.errors import ShapeError, TransfuseTypeError, TransfuseValueError
from transfuse.ir.source import with_location
from transfuse.ir.tracing import Tracer

from ._core import asarray, call_ufunc, cast_operand, implements, result_type, shape_of, unsupported
from ._indexing import reshape_maybe_view, view_slice, view_transpose

Labels = list[int]
ELLIPSIS_BASE = 1 << 16  # ellipsis dimension j is label ELLIPSIS_BASE + j (above any letter)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # sublist ints 0..51
DEFAULT_STRATEGY = "auto"  # opt_einsum's own default: optimal for few operands, then cheaper


def _error(message: str) -> TransfuseValueError:
    return TransfuseValueError(with_location(f"einsum: {message}"))


def _name(label: int) -> str:
    return "..." if label >= ELLIPSIS_BASE else repr(chr(label))


# ---------------------------------------------------------------------------------------
# Parsing: both forms to tokens (a label, or Ellipsis), then to labels per operand


def _string_tokens(spec: str, where: str) -> list:
    """One operand's (or the output's) subscripts as labels and Ellipsis."""
    if spec.count("...") > 1 or spec.replace("...", "").count("."):
        raise _error(f"{where} has a '.' that is not part of one ellipsis ('...')")
    tokens: list = []
    for part in spec.split("..."):
        for c in part:
            if c not in LETTERS:
                raise _error(f"invalid subscript {c!r} in {where}: subscripts must be "
                             "letters")
            tokens.append(ord(c))
        tokens.append(Ellipsis)
    return tokens[:-1]


def _parse_string(subscripts: str, n_operands: int) -> tuple[list[list], list | None]:
    subscripts = subscripts.replace(" ", "")
    lhs, arrow, rhs = subscripts.partition("->")
    if any(c in lhs + rhs for c in "->"):
        raise _error(f"subscripts {subscripts!r} must hold at most one '->' and no other "
                     "'-' or '>'")
    specs = lhs.split(",")
    if len(specs) != n_operands:
        raise _error(f"subscripts {subscripts!r} name {len(specs)} operand(s) but "
                     f"{n_operands} were given")
    inputs = [_string_tokens(s, f"operand {i}'s subscripts {s!r}") for i, s in
              enumerate(specs)]
    return inputs, (_string_tokens(rhs, f"the output subscripts {rhs!r}") if arrow else None)


def _sublist_tokens(sublist: Any, where: str) -> list:
    tokens = []
    for s in sublist:
        if s is Ellipsis:
            tokens.append(Ellipsis)
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool) and \
                0 <= s < len(LETTERS):
            tokens.append(ord(LETTERS[s]))
        else:
            raise _error(f"{where} holds {s!r}: a subscript must be an int in [0, 52) or "
                         "Ellipsis")
    if tokens.count(Ellipsis) > 1:
        raise _error(f"{where} holds more than one Ellipsis")
    return tokens


def _parse_interleaved(args: Sequence) -> tuple[list, list[list], list | None]:
    """np.einsum(op0, sublist0, op1, sublist1, ..., [output sublist])."""
    operands, sublists = list(args[0::2]), list(args[1::2])
    output = None
    if len(args) % 2:
        output = _sublist_tokens(operands.pop(), "the output sublist")
    inputs = [_sublist_tokens(s, f"operand {i}'s sublist") for i, s in enumerate(sublists)]
    return operands, inputs, output


def _expand_ellipses(inputs: list[list], output: list | None,
                     ndims: list[int]) -> tuple[list[Labels], Labels]:
    """Labels per operand and for the output, ellipses replaced by their dimensions'."""
    width = 0  # how many dimensions the ellipsis stands for (broadcast: the most of any)
    for i, (tokens, nd) in enumerate(zip(inputs, ndims)):
        named = len(tokens) - tokens.count(Ellipsis)
        if named > nd or (Ellipsis not in tokens and named != nd):
            raise _error(f"operand {i} has {nd} dimension(s) but its subscripts name {named}")
        if Ellipsis in tokens:
            width = max(width, nd - named)
    ellipsis = [ELLIPSIS_BASE + j for j in range(width)]
    labels = []
    for tokens, nd in zip(inputs, ndims):
        k = nd - (len(tokens) - tokens.count(Ellipsis))
        labels.append(_replace_ellipsis(tokens, ellipsis[width - k:]))
    if output is None:  # implicit: the ellipsis, then labels seen once, alphabetically
        counts = [lab for ls in labels for lab in ls]
        return labels, ellipsis + sorted(lab for lab in set(counts)
                                         if counts.count(lab) == 1 and lab < ELLIPSIS_BASE)
    if Ellipsis not in output and width:
        raise _error("the operands' ellipses stand for dimensions the output has no '...' for")
    out = _replace_ellipsis(output, ellipsis)
    seen = {lab for ls in labels for lab in ls}
    for lab in out:
        if out.count(lab) > 1:
            raise _error(f"output subscript {_name(lab)} appears more than once")
        if lab not in seen:
            raise _error(f"output subscript {_name(lab)} appears in no operand")
    return labels, out


def _replace_ellipsis(tokens: list, dims: Labels) -> Labels:
    if Ellipsis not in tokens:
        return list(tokens)
    i = tokens.index(Ellipsis)
    return tokens[:i] + dims + tokens[i + 1:]


def _label_sizes(labels: list[Labels], shapes: list[tuple[int, ...]]) -> dict[int, int]:
    """Each label's size; size 1 broadcasts, as in NumPy; repeats within an operand match."""
    sizes: dict[int, int] = {}
    for i, (ls, shape) in enumerate(zip(labels, shapes)):
        own: dict[int, int] = {}
        for lab, n in zip(ls, shape):
            if own.setdefault(lab, n) != n:
                raise ShapeError(with_location(
                    f"einsum: label {_name(lab)} is repeated in operand {i} with different "
                    f"sizes ({own[lab]} != {n}): a diagonal needs equal sizes"))
        for lab, n in own.items():
            known = sizes.setdefault(lab, n)
            if known != n and 1 not in (known, n):
                raise ShapeError(with_location(
                    f"einsum: label {_name(lab)} has size {known} in one operand and {n} "
                    f"in operand {i} (shapes {[tuple(s) for s in shapes]})"))
            sizes[lab] = n if known == 1 else known  # 1 broadcasts (to 0 as well)
    return sizes


# ---------------------------------------------------------------------------------------
# One operand: diagonals, broadcast axes, sums


LAX_VIEWS = (lax.transpose, lax.reshape, lax.slice)
NUMPY_VIEWS = (view_transpose, reshape_maybe_view, view_slice)  # NumPy's einsum: a view


def _diagonals(labels: Labels, x: Any, ops=LAX_VIEWS) -> tuple[Labels, Any]:
    """Each repeated label's diagonal: its axes moved last, merged, a strided slice."""
    transpose, reshape, slice_ = ops
    axes_of = {lab: [i for i, m in enumerate(labels) if m == lab] for lab in labels}
    repeated = [lab for lab, axes in axes_of.items() if len(axes) > 1]
    if not repeated:
        return labels, x
    single = [lab for lab, axes in axes_of.items() if len(axes) == 1]
    perm = [axes_of[lab][0] for lab in single] + [i for lab in repeated for i in axes_of[lab]]
    shape = shape_of(x)
    kept = [shape[axes_of[lab][0]] for lab in single]
    sides = [shape[axes_of[lab][0]] for lab in repeated]
    x = transpose(x, perm)
    powers = [len(axes_of[lab]) for lab in repeated]
    x = reshape(x, tuple(kept + [n ** k for n, k in zip(sides, powers)]))
    # In the merged axis of k axes of size n, element (j, ..., j) is at j * (1 + n + ... n^k-1).
    steps = [1] * len(kept) + [max(1, sum(n ** p for p in range(k)))
                               for n, k in zip(sides, powers)]
    x = slice_(x, [0] * len(steps), steps, kept + sides)
    return single + repeated, x


def _drop_broadcast(labels: Labels, x: Any, sizes: dict[int, int]) -> tuple[Labels, Any]:
    """Size-1 axes whose label is larger elsewhere: broadcast, so the label is not here."""
    keep = [i for i, lab in enumerate(labels) if shape_of(x)[i] == sizes[lab]]
    if len(keep) == len(labels):
        return labels, x
    return [labels[i] for i in keep], lax.reshape(x, tuple(shape_of(x)[i] for i in keep))


def _sum_unneeded(labels: Labels, x: Any, needed: set[int]) -> tuple[Labels, Any]:
    axes = [i for i, lab in enumerate(labels) if lab not in needed]
    if not axes:
        return labels, x
    return [lab for lab in labels if lab in needed], lax.reduce_sum(x, axes)


def _contract_pair(a: tuple[Labels, Any], b: tuple[Labels, Any],
                   needed: set[int]) -> tuple[Labels, Any]:
    """One dot_general: shared labels still needed are batch, the other shared summed."""
    (la, xa), (lb, xb) = _sum_unneeded(*a, needed | set(b[0])), _sum_unneeded(*b, needed |
                                                                              set(a[0]))
    batch = [lab for lab in la if lab in lb and lab in needed]
    summed = [lab for lab in la if lab in lb and lab not in needed]
    dimension_numbers = (([la.index(c) for c in summed], [lb.index(c) for c in summed]),
                         ([la.index(c) for c in batch], [lb.index(c) for c in batch]))
    out = lax.dot_general(xa, xb, dimension_numbers)
    return batch + [c for c in la if c not in lb] + [c for c in lb if c not in la], out


# ---------------------------------------------------------------------------------------
# The contraction order


def _path(optimize: Any, labels: list[Labels], output: Labels,
          sizes: dict[int, int]) -> list[tuple[int, ...]]:
    """Which operands to contract, step by step (positions in the list as it shrinks)."""
    n = len(labels)
    if _is_path(optimize):
        return _checked_path(optimize, n)
    strategy, memory_limit = optimize, None
    if isinstance(optimize, tuple) and len(optimize) == 2 and isinstance(optimize[0], str):
        strategy, memory_limit = optimize
    if strategy in (False, True, None):
        strategy = DEFAULT_STRATEGY
    if not isinstance(strategy, str):
        raise _error(f"optimize={optimize!r} is none of False, True, a strategy name, "
                     "(name, memory limit) or a path such as np.einsum_path returns")
    if n <= 2:
        return [tuple(range(n))]
    return _opt_einsum_path(strategy, memory_limit, labels, output, sizes)


def _opt_einsum_path(strategy: str, memory_limit: Any, labels: list[Labels], output: Labels,
                     sizes: dict[int, int]) -> list[tuple[int, ...]]:
    import opt_einsum  # lazily: only 3+ operands need an order (a few ms to import)

    symbol = {lab: opt_einsum.get_symbol(i) for i, lab in
              enumerate(sorted({lab for ls in labels for lab in ls}))}
    spec = ",".join("".join(symbol[lab] for lab in ls) for ls in labels) + "->" + "".join(
        symbol[lab] for lab in output)
    shapes = [tuple(sizes[lab] for lab in ls) for ls in labels]
    try:
        path, _ = opt_einsum.contract_path(spec, *shapes, shapes=True, optimize=strategy,
                                           memory_limit=memory_limit)
    except (KeyError, TypeError, ValueError) as e:
        raise _error(f"optimize={strategy!r} is not a contraction strategy opt_einsum "
                     f"knows ({e})") from None
    return [tuple(step) for step in path]


def _is_path(optimize: Any) -> bool:
    """A list of steps, bare (opt_einsum) or after 'einsum_path' (np.einsum_path)."""
    return isinstance(optimize, (list, tuple)) and bool(optimize) and (
        optimize[0] == "einsum_path" or isinstance(optimize[0], (list, tuple)))


def _checked_path(path: Sequence, n: int) -> list[tuple[int, ...]]:
    steps = list(path[1:] if path and path[0] == "einsum_path" else path)
    left = n
    for step in steps:
        if not isinstance(step, (list, tuple)) or not step or len(set(step)) != len(step) or \
                not all(isinstance(i, (int, np.integer)) and 0 <= i < left for i in step):
            raise _error(f"the path step {step!r} does not name distinct operands among the "
                         f"{left} left")
        left -= len(step) - 1
    if left != 1:
        raise _error(f"the path {list(path)!r} leaves {left} operands uncontracted")
    return [tuple(int(i) for i in step) for step in steps]


# ---------------------------------------------------------------------------------------
# einsum


@implements(np.einsum)
def einsum(*operands, out=None, optimize=False, dtype=None, order="K", casting="safe"):
    """NumPy's einsum, traceable, in every form (the module docstring says how)."""
    if out is not None:
        raise unsupported("np.einsum(..., out=...) on traced values",
                          "assign the result instead: out[...] = result")
    if order not in ("K", "C", "A"):
        raise unsupported(f"np.einsum with order={order!r}")
    if operands and isinstance(operands[0], str):
        arrays = list(operands[1:])
        inputs, output = _parse_string(operands[0], len(arrays))
    else:
        arrays, inputs, output = _parse_interleaved(operands)
    arrays = _cast_all([asarray(a) for a in arrays], dtype, casting)
    shapes = [tuple(shape_of(a)) for a in arrays]
    labels, output = _expand_ellipses(inputs, output, [len(s) for s in shapes])
    sizes = _label_sizes(labels, shapes)
    if len(arrays) == 1 and set(labels[0]) == set(output):
        return _single_view(arrays[0], labels[0], output)
    if arrays[0].dtype == np.bool_:  # NumPy's sum of bool products is an or: count, then != 0
        counts = einsum(*_with_arrays(operands, [cast_operand(a, np.int64) for a in arrays]),
                        optimize=optimize)
        return call_ufunc(np.not_equal, counts, 0)
    terms = [_diagonals(ls, x) for x, ls in zip(arrays, labels)]
    terms = [_drop_broadcast(*term, sizes) for term in terms]
    terms = [_sum_unneeded(*term, _needed_besides(terms, i, output))
             for i, term in enumerate(terms)]
    for step in _path(optimize, [ls for ls, _ in terms], output, sizes):
        picked = [terms[i] for i in step]
        terms = [t for i, t in enumerate(terms) if i not in step]
        still_needed = set(output).union(*(ls for ls, _ in terms))
        terms.append(_contract_all(picked, still_needed, output))
    (result_labels, result), = terms
    result_labels, result = _sum_unneeded(result_labels, result, set(output))
    if result_labels == output:
        return result
    return lax.transpose(result, [result_labels.index(lab) for lab in output])


def _with_arrays(operands: tuple, arrays: list[Any]) -> list:
    """einsum's arguments with the operands replaced, in either form."""
    if isinstance(operands[0], str):
        return [operands[0], *arrays]
    replaced = list(operands)
    replaced[0:2 * len(arrays):2] = arrays
    return replaced


def _cast_all(arrays: list[Any], dtype: Any, casting: str) -> list[Any]:
    if dtype is None:
        common = result_type(*arrays) if arrays else np.dtype(np.float64)
        return [cast_operand(a, common) for a in arrays]
    dtype = np.dtype(dtype)
    for a in arrays:
        if not np.can_cast(a.dtype, dtype, casting):
            raise TransfuseTypeError(with_location(
                f"einsum: operand of dtype {a.dtype} cannot be cast to dtype={dtype} under "
                f"casting={casting!r}"))
    return [cast_operand(a, dtype) for a in arrays]


def _needed_besides(terms: list[tuple[Labels, Any]], i: int, output: Labels) -> set[int]:
    """The labels the output or an operand other than terms[i] holds."""
    return set(output).union(*(ls for j, (ls, _) in enumerate(terms) if j != i))


def _contract_all(picked: list[tuple[Labels, Any]], needed: set[int],
                  output: Labels) -> tuple[Labels, Any]:
    """The operands of one path step, contracted left to right (a step is usually two)."""
    term = picked[0]
    if len(picked) == 1:
        return _sum_unneeded(*term, needed)
    for k, other in enumerate(picked[1:], start=2):
        later = needed.union(*(ls for ls, _ in picked[k:]))
        term = _ordered_pair(term, other, later, output)
    return term


def _ordered_pair(a: tuple[Labels, Any], b: tuple[Labels, Any], needed: set[int],
                  output: Labels) -> tuple[Labels, Any]:
    """a with b, or b with a where that gives the output's order (no transpose after)."""
    if _pair_labels(a[0], b[0], needed) != output and \
            _pair_labels(b[0], a[0], needed) == output:
        a, b = b, a
    return _contract_pair(a, b, needed)


def _pair_labels(la: Labels, lb: Labels, needed: set[int]) -> Labels:
    """The labels _contract_pair gives: batch, then a's free labels, then b's."""
    return [c for c in la if c in lb and c in needed] + [
        c for c in la if c not in lb and c in needed] + [
        c for c in lb if c not in la and c in needed]


def _single_view(x: Any, labels: Labels, output: Labels) -> Any:
    """One operand, nothing summed: NumPy returns a (writable) view, so writes reach x."""
    labels, x = _diagonals(labels, x, NUMPY_VIEWS)
    return view_transpose(x, [labels.index(lab) for lab in output])


# ---------------------------------------------------------------------------------------
# einsum_path: only shapes matter, so NumPy's own on zero-stride stand-ins


@implements(np.einsum_path)
def einsum_path(*operands, optimize="greedy", einsum_call=False) -> tuple[list, str]:
    stand_ins = [_stand_in(a) for a in operands]
    return np.einsum_path(*stand_ins, optimize=optimize, einsum_call=einsum_call)


def _stand_in(a: Any) -> Any:
    if isinstance(a, Tracer):
        return np.broadcast_to(np.zeros((), a.dtype), a.shape)
    return a

