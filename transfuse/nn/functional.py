"""transfuse.nn.functional: torch.nn.functional's layers and losses, written with traceable ops.

Every function takes NumPy arrays or traced values and is built from `transfuse.numpy`
and `transfuse.lax` operations only, so grad, vmap, jvp and jit apply to all of them.
Argument names and defaults follow torch.nn.functional.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

import transfuse.lax as lax
import transfuse.numpy as tnp
from transfuse.ir.errors import (
    DTypeError,
    MutationError,
    ShapeError,
    TransfuseIndexError,
    TransfuseTypeError,
    TransfuseValueError,
)
from transfuse.ir.source import with_location
from transfuse.ir.tracing import is_traced

__all__ = [
    "relu", "tanh", "sigmoid", "gelu", "softmax", "log_softmax", "mse_loss", "nll_loss",
    "cross_entropy", "linear", "embedding", "conv2d", "batch_norm", "layer_norm", "dropout",
]

_REDUCTIONS = ("none", "mean", "sum")


# -- activations ------------------------------------------------------------------------
def relu(input: Any, inplace: bool = False) -> Any:
    """max(input, 0); NaN stays NaN and the gradient at 0 is 0, as in torch."""
    return tnp.where(input <= 0, 0, input)


def tanh(input: Any) -> Any:
    """Hyperbolic tangent."""
    return tnp.tanh(input)


def sigmoid(input: Any) -> Any:
    """The logistic function 1 / (1 + exp(-input))."""
    return tnp.logistic(input)


def gelu(input: Any, approximate: str = "none") -> Any:
    """GELU: x * Phi(x) with the exact erf form, or the tanh approximation."""
    if approximate == "none":
        return 0.5 * input * (1 + tnp.erf(input * (1 / math.sqrt(2))))
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (input + 0.044715 * input * input * input)
        return 0.5 * input * (1 + tnp.tanh(inner))
    raise TransfuseValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def _require_dim(dim: Any, name: str) -> int:
    if dim is None:
        raise TransfuseTypeError(
            f"{name}: pass dim explicitly (torch's implicit choice of dim is deprecated)")
    return dim


def _as_dtype(input: Any, dtype: Any) -> Any:
    return input if dtype is None else tnp.astype(input, np.dtype(dtype))


def softmax(input: Any, dim: int | None = None, dtype: Any = None) -> Any:
    """exp(input) normalised to sum to 1 along `dim`."""
    dim = _require_dim(dim, "softmax")
    x = _as_dtype(input, dtype)
    # Shifting by the max changes nothing mathematically and keeps exp from overflowing.
    e = tnp.exp(x - tnp.max(x, axis=dim, keepdims=True))
    return e / tnp.sum(e, axis=dim, keepdims=True)


def log_softmax(input: Any, dim: int | None = None, dtype: Any = None) -> Any:
    """log(softmax(input, dim)), computed stably."""
    dim = _require_dim(dim, "log_softmax")
    x = _as_dtype(input, dtype)
    shifted = x - tnp.max(x, axis=dim, keepdims=True)
    return shifted - tnp.log(tnp.sum(tnp.exp(shifted), axis=dim, keepdims=True))


# -- losses -----------------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise TransfuseValueError(
            f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Any, reduction: str) -> Any:
    if reduction == "mean":
        return tnp.mean(loss)
    if reduction == "sum":
        return tnp.sum(loss)
    return loss


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Any:
    """Mean (or summed, or elementwise) squared error."""
    _check_reduction(reduction)
    if _shape(input) != _shape(target):
        warnings.warn(
            f"mse_loss: target shape {_shape(target)} differs from input shape "
            f"{tuple(input.shape)}; they will be broadcast, which may not be intended",
            stacklevel=2)
    diff = input - target
    return _reduce(diff * diff, reduction)


def _class_axis(input: Any, name: str) -> int:
    if input.ndim == 0:
        raise ShapeError(f"{name}: input must have a class dimension, got a 0-d array")
    return 0 if input.ndim == 1 else 1


def _broadcast_weight(weight: Any, input: Any, axis: int, name: str) -> Any:
    """weight (C,) reshaped to broadcast along the class axis of input."""
    classes = input.shape[axis]
    if tuple(weight.shape) != (classes,):
        raise ShapeError(
            f"{name}: weight must have shape ({classes},) (one entry per class), got "
            f"{tuple(weight.shape)}")
    shape = [1] * input.ndim
    shape[axis] = classes
    return weight.reshape(tuple(shape))


def _check_class_indices(target: Any, input: Any, axis: int, ignore_index: int,
                         name: str) -> None:
    expected = tuple(input.shape[:axis]) + tuple(input.shape[axis + 1:])
    if tuple(target.shape) != expected:
        raise ShapeError(
            f"{name}: class-index target must have shape {expected} for input of shape "
            f"{tuple(input.shape)}, got {tuple(target.shape)}")
    if not isinstance(target, np.ndarray):
        return  # a traced target: its values are not known here
    classes = input.shape[axis]
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bad.any():
        raise TransfuseIndexError(
            f"{name}: target {target[bad].ravel()[0]} is out of range for {classes} classes")


def _one_hot(target: Any, input: Any, axis: int, ignore_index: int) -> Any:
    """input-shaped one-hot of target along `axis`, all zero where target == ignore_index."""
    classes = input.shape[axis]
    shape = [1] * input.ndim
    shape[axis] = classes
    picked = tnp.expand_dims(target, axis) == tnp.arange(classes).reshape(tuple(shape))
    kept = tnp.expand_dims(target != ignore_index, axis)
    return tnp.astype(picked & kept, input.dtype)


def nll_loss(input: Any, target: Any, weight: Any = None, *, ignore_index: int = -100,
             reduction: str = "mean") -> Any:
    """Negative log-likelihood of integer class targets given log-probabilities `input`."""
    loss, target_weight = _nll_terms(input, target, weight, ignore_index, "nll_loss")
    return _weighted_reduce(loss, target_weight, reduction)


def _nll_terms(input: Any, target: Any, weight: Any, ignore_index: int, name: str
               ) -> tuple[Any, Any]:
    """Per-element weighted NLL and the weight of each element's target class."""
    _check_integer(target, name)
    axis = _class_axis(input, name)
    _check_class_indices(target, input, axis, ignore_index, name)
    one_hot = _one_hot(target, input, axis, ignore_index)
    if weight is not None:
        one_hot = one_hot * _broadcast_weight(weight, input, axis, name)
    return -tnp.sum(input * one_hot, axis=axis), tnp.sum(one_hot, axis=axis)


def _weighted_reduce(loss: Any, target_weight: Any, reduction: str) -> Any:
    """torch's NLL reductions: 'mean' divides by the total weight of the kept targets."""
    _check_reduction(reduction)
    if reduction == "mean":
        return tnp.sum(loss) / tnp.sum(target_weight)
    return _reduce(loss, reduction)


def _check_integer(target: Any, name: str) -> None:
    if not np.issubdtype(target.dtype, np.integer):
        raise DTypeError(f"{name}: class-index targets must be integers, got {target.dtype}")


def cross_entropy(input: Any, target: Any, weight: Any = None, *, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Any:
    """Cross-entropy between logits `input` (class axis 1, or 0 for 1-d input) and integer
    class targets, or class probabilities of input's shape."""
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise TransfuseValueError(
            f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    axis = _class_axis(input, "cross_entropy")
    logp = log_softmax(input, axis)
    if np.issubdtype(target.dtype, np.floating):
        if ignore_index != -100:
            raise TransfuseValueError(
                "cross_entropy: ignore_index applies only to class-index targets")
        return _cross_entropy_probs(logp, target, weight, axis, reduction, label_smoothing)
    nll, target_weight = _nll_terms(logp, target, weight, ignore_index, "cross_entropy")
    loss = _weighted_reduce(nll, target_weight, reduction)
    if label_smoothing == 0.0:
        return loss
    smooth = _smoothing_term(logp, target, weight, axis, ignore_index, target_weight, reduction)
    return (1 - label_smoothing) * loss + smooth * (label_smoothing / input.shape[axis])


def _smoothing_term(logp: Any, target: Any, weight: Any, axis: int, ignore_index: int,
                    target_weight: Any, reduction: str) -> Any:
    """torch's label-smoothing term: -(weighted) sum of log-probabilities, ignored ones out."""
    if weight is not None:
        logp = logp * _broadcast_weight(weight, logp, axis, "cross_entropy")
    smooth = tnp.where(target == ignore_index, 0, -tnp.sum(logp, axis=axis))
    if reduction == "mean":
        return tnp.sum(smooth) / tnp.sum(target_weight)
    return _reduce(smooth, reduction)


def _cross_entropy_probs(logp: Any, target: Any, weight: Any, axis: int, reduction: str,
                         label_smoothing: float) -> Any:
    """Cross-entropy against class probabilities (soft labels)."""
    if tuple(target.shape) != tuple(logp.shape):
        raise ShapeError(
            f"cross_entropy: probability targets must have the input's shape "
            f"{tuple(logp.shape)}, got {tuple(target.shape)}")
    classes = logp.shape[axis]
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    terms = logp * target
    if weight is not None:
        terms = terms * _broadcast_weight(weight, logp, axis, "cross_entropy")
    loss = -tnp.sum(terms, axis=axis)
    if reduction == "mean":
        return tnp.sum(loss) / (logp.size // classes)
    return _reduce(loss, reduction)


# -- layers -----------------------------------------------------------------------------
def linear(input: Any, weight: Any, bias: Any = None) -> Any:
    """input @ weight.T + bias, for weight of shape (out_features, in_features)."""
    out = input @ weight.T
    return out if bias is None else out + bias


def embedding(input: Any, weight: Any, padding_idx: int | None = None) -> Any:
    """Rows of `weight` picked by the integer indices in `input`."""
    _check_integer(input, "embedding")
    rows = tnp.take(weight, input, axis=0)
    if padding_idx is None or not is_traced(weight):
        return rows
    # As torch: the padding row's value is read, but no gradient flows into it.
    padding = tnp.expand_dims(input == padding_idx % weight.shape[0], -1)
    return tnp.where(padding, lax.stop_gradient(rows), rows)


def int_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(v, (int, np.integer)) for v in pair)):
        raise TransfuseTypeError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_padding(padding: Any, kernel: Sequence[int], dilation: tuple[int, int],
                 stride: tuple[int, int]) -> list[tuple[int, int]]:
    """torch's padding argument (int, pair, 'valid' or 'same') as (lo, hi) per spatial axis."""
    if padding == "valid":
        return [(0, 0), (0, 0)]
    if padding == "same":
        if stride != (1, 1):
            raise TransfuseValueError("conv2d: padding='same' is not supported for strided "
                                      "convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return [(t // 2, t - t // 2) for t in totals]
    if isinstance(padding, str):
        raise TransfuseValueError(
            f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    return [(p, p) for p in int_pair(padding, "padding")]


def _check_conv_shapes(input: Any, weight: Any, groups: int) -> None:
    if input.ndim != 4 or weight.ndim != 4:
        raise ShapeError(
            f"conv2d: expected input (N, C, H, W) or (C, H, W) and weight (O, C/groups, kH, "
            f"kW), got input {tuple(input.shape)} and weight {tuple(weight.shape)}")
    if groups < 1 or weight.shape[0] % groups:
        raise TransfuseValueError(
            f"conv2d: groups={groups} must be positive and divide the {weight.shape[0]} "
            "output channels")
    if input.shape[1] != weight.shape[1] * groups:
        raise ShapeError(
            f"conv2d: input has {input.shape[1]} channels but weight {tuple(weight.shape)} "
            f"with groups={groups} expects {weight.shape[1] * groups}")


def _promote_conv_operands(input: Any, weight: Any) -> tuple[Any, Any]:
    """input and weight in NumPy's result dtype for the pair (float32 weights with a float64
    input compute in float64), as `input @ weight.T` does in linear."""
    dtype = np.result_type(input.dtype, weight.dtype)
    return tnp.astype(input, dtype, copy=False), tnp.astype(weight, dtype, copy=False)


def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Any:
    """2-d cross-correlation of input (N, C, H, W) with weight (O, C/groups, kH, kW)."""
    unbatched = input.ndim == 3
    if unbatched:
        input = tnp.expand_dims(input, 0)
    _check_conv_shapes(input, weight, groups)
    input, weight = _promote_conv_operands(input, weight)
    stride, dilation = int_pair(stride, "stride"), int_pair(dilation, "dilation")
    pads = conv_padding(padding, weight.shape[2:], dilation, stride)
    out = lax.conv_general_dilated(input, weight, stride, pads, rhs_dilation=dilation,
                                   feature_group_count=groups)
    if bias is not None:
        out = out + bias.reshape((1, -1, 1, 1))
    return out[0] if unbatched else out


def _channel_shape(input: Any) -> tuple[int, ...]:
    """(1, C, 1, ...): per-channel values broadcast against input (N, C, ...)."""
    return (1, input.shape[1]) + (1,) * (input.ndim - 2)


def _update_running(buffer: Any, stat: Any, momentum: Any) -> None:
    """buffer <- (1 - momentum) * buffer + momentum * stat, in place (so whatever array is
    the buffer, e.g. one passed to functional_call, sees the update)."""
    new = (1 - momentum) * buffer + momentum * stat.reshape(buffer.shape)
    if is_traced(new) and not is_traced(buffer):
        raise MutationError(with_location(
            "batch_norm in training mode inside a transform: the new running statistics are "
            "traced, but the running buffer is a plain NumPy array (the module's own), which "
            "cannot hold them. Pass the buffers to functional_call along with the parameters "
            "(functional_call(model, (params, buffers), args)), call "
            "replace_all_batch_norm_modules_(model), or use model.eval()"))
    if new.dtype != buffer.dtype:
        new = tnp.astype(new, buffer.dtype)
    buffer[...] = new


def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: Any = 0.1,
               eps: float = 1e-5) -> Any:
    """Normalise each channel (axis 1) of input; in training, by the batch's statistics
    (updating the running buffers in place, with the unbiased variance), else by the
    running statistics."""
    if input.ndim < 2:
        raise ShapeError(f"batch_norm: input must be (N, C, ...), got shape {tuple(input.shape)}")
    shape = _channel_shape(input)
    if training:
        out = _batch_norm_train(input, running_mean, running_var, momentum, eps)
    else:
        if running_mean is None or running_var is None:
            raise TransfuseValueError(
                "batch_norm: running_mean and running_var must be given when training=False")
        centered = input - running_mean.reshape(shape)
        out = centered / tnp.sqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def _batch_norm_train(input: Any, running_mean: Any, running_var: Any, momentum: Any,
                      eps: float) -> Any:
    axes = (0,) + tuple(range(2, input.ndim))
    count = math.prod(input.shape[a] for a in axes)
    if count <= 1:
        raise TransfuseValueError(
            f"batch_norm: expected more than 1 value per channel when training, got input "
            f"of shape {tuple(input.shape)}")
    mean = tnp.mean(input, axis=axes, keepdims=True)
    centered = input - mean
    var = tnp.mean(centered * centered, axis=axes, keepdims=True)
    if running_mean is not None:
        _update_running(running_mean, mean, momentum)
    if running_var is not None:
        _update_running(running_var, var * (count / (count - 1)), momentum)
    return centered / tnp.sqrt(var + eps)


def _normalized_axes(input: Any, normalized_shape: Any) -> tuple[int, ...]:
    shape = ((normalized_shape,) if isinstance(normalized_shape, (int, np.integer))
             else tuple(normalized_shape))
    if not shape or tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise ShapeError(
            f"layer_norm: normalized_shape {shape} must match the trailing dimensions of "
            f"the input, whose shape is {tuple(input.shape)}")
    return tuple(range(input.ndim - len(shape), input.ndim))


def layer_norm(input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Any:
    """Normalise over the trailing `normalized_shape` dimensions (biased variance)."""
    axes = _normalized_axes(input, normalized_shape)
    centered = input - tnp.mean(input, axis=axes, keepdims=True)
    var = tnp.mean(centered * centered, axis=axes, keepdims=True)
    out = centered / tnp.sqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def check_probability(p: float, name: str = "dropout") -> None:
    """A clear error unless 0 <= p <= 1."""
    if not 0.0 <= p <= 1.0:
        raise TransfuseValueError(f"{name} probability has to be between 0 and 1, but got {p}")


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
    """In training, zero each element with probability p and scale the rest by 1/(1-p)."""
    check_probability(p)
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    keep = tnp.random.bernoulli(1 - p, size=tuple(input.shape))
    return input * (tnp.astype(keep, input.dtype) * (1 / (1 - p)))
