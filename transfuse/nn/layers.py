"""Layers with parameters (Linear, Conv2d, Embedding) and without (activations, Flatten,
Dropout, Identity)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transfuse.ir.errors import TransfuseTypeError, TransfuseValueError

from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


def float_dtype(dtype: Any) -> np.dtype:
    """The parameter dtype: float32 unless told, and floating point in any case."""
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TransfuseTypeError(f"parameters must have a floating-point dtype, got {dtype}")
    return dtype


def empty_parameter(shape: tuple[int, ...], dtype: np.dtype) -> Parameter:
    """An uninitialised parameter (reset_parameters fills it)."""
    return Parameter(np.empty(shape, dtype=dtype))


def init_fan_in_uniform(weight: np.ndarray, bias: np.ndarray | None) -> None:
    """torch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)) on the weight, which is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class Linear(Module):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = None):
        super().__init__()
        dtype = float_dtype(dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = empty_parameter((out_features, in_features), dtype)
        self.register_parameter(
            "bias", empty_parameter((out_features,), dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw fresh initial parameters (torch's defaults)."""
        init_fan_in_uniform(self.weight, self.bias)

    def forward(self, input: Any) -> Any:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Conv2d(Module):
    """2-d convolution (cross-correlation) over (N, C, H, W) inputs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype: Any = None):
        super().__init__()
        _check_conv_args(in_channels, out_channels, groups, padding_mode)
        dtype = float_dtype(dtype)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = F.int_pair(kernel_size, "kernel_size")
        self.stride = F.int_pair(stride, "stride")
        self.dilation = F.int_pair(dilation, "dilation")
        self.padding = padding if isinstance(padding, str) else F.int_pair(padding, "padding")
        self.padding_mode = padding_mode
        # Validate the padding now (e.g. 'same' with a stride) rather than at the first call.
        F.conv_padding(self.padding, self.kernel_size, self.dilation, self.stride)
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = empty_parameter(shape, dtype)
        self.register_parameter(
            "bias", empty_parameter((out_channels,), dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw fresh initial parameters (torch's defaults)."""
        init_fan_in_uniform(self.weight, self.bias)

    def forward(self, input: Any) -> Any:
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


def _check_conv_args(in_channels: int, out_channels: int, groups: int,
                     padding_mode: str) -> None:
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise TransfuseValueError(
            f"Conv2d: groups={groups} must be positive and divide in_channels={in_channels} "
            f"and out_channels={out_channels}")
    if padding_mode != "zeros":
        raise TransfuseValueError(
            f"Conv2d: only padding_mode='zeros' is supported, got {padding_mode!r}")


class Embedding(Module):
    """A lookup table: integer indices -> rows of weight (num_embeddings, embedding_dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, dtype: Any = None):
        super().__init__()
        if max_norm is not None:
            raise TransfuseValueError("Embedding: max_norm is not supported")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise TransfuseValueError(
                    f"Embedding: padding_idx {padding_idx} must be within num_embeddings "
                    f"{num_embeddings}")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.weight = empty_parameter((num_embeddings, embedding_dim), float_dtype(dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 1) draws, with the padding row (if any) zeroed, as torch."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight[self.padding_idx] = 0

    def forward(self, input: Any) -> Any:
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, input: Any) -> Any:
        return F.relu(input)


class Tanh(Module):
    """tanh(x)."""

    def forward(self, input: Any) -> Any:
        return F.tanh(input)


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, input: Any) -> Any:
        return F.sigmoid(input)


class GELU(Module):
    """x * Phi(x) (exact erf form, or approximate='tanh')."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise TransfuseValueError(
                f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input: Any) -> Any:
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Identity(Module):
    """Returns its input."""

    def forward(self, input: Any) -> Any:
        return input


class Flatten(Module):
    """Merge dimensions start_dim..end_dim into one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Any) -> Any:
        shape = tuple(input.shape)
        start, end = self._dims(len(shape))
        merged = math.prod(shape[start:end + 1])
        return input.reshape(shape[:start] + (merged,) + shape[end + 1:])

    def _dims(self, ndim: int) -> tuple[int, int]:
        rank = max(ndim, 1)
        start, end = self.start_dim, self.end_dim
        if not (-rank <= start < rank and -rank <= end < rank):
            raise TransfuseValueError(
                f"Flatten: start_dim={start}, end_dim={end} out of range for a {ndim}-d input")
        start, end = start % rank, end % rank
        if start > end:
            raise TransfuseValueError(
                f"Flatten: start_dim={self.start_dim} comes after end_dim={self.end_dim}")
        return start, end

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Zero elements with probability p in training mode (scaling the rest); identity in
    evaluation mode. Draws come from transfuse.random (seed with transfuse.random.seed)."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        F.check_probability(p)
        self.p, self.inplace = p, inplace

    def forward(self, input: Any) -> Any:
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
