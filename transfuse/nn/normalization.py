"""Normalisation layers: BatchNorm1d, BatchNorm2d (with running statistics) and LayerNorm."""

from __future__ import annotations

from typing import Any

import numpy as np

from transfuse.ir.errors import ShapeError

from . import functional as F
from . import init
from .layers import float_dtype
from .module import Module


class _BatchNorm(Module):
    """Shared code of BatchNorm1d and BatchNorm2d (torch's _BatchNorm)."""

    input_ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype: Any = None,
                 *, bias: bool = True):
        super().__init__()
        dtype = float_dtype(dtype)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.register_parameter("weight", np.ones(num_features, dtype) if affine else None)
        self.register_parameter(
            "bias", np.zeros(num_features, dtype) if affine and bias else None)
        stats = track_running_stats
        self.register_buffer("running_mean", np.zeros(num_features, dtype) if stats else None)
        self.register_buffer("running_var", np.ones(num_features, dtype) if stats else None)
        self.register_buffer("num_batches_tracked",
                             np.array(0, dtype=np.int64) if stats else None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked (in place)."""
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            init.zeros_(self.num_batches_tracked)

    def reset_parameters(self) -> None:
        """Reset the running statistics and the affine parameters (weight 1, bias 0)."""
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def _check_input(self, input: Any) -> None:
        if input.ndim not in self.input_ranks:
            ranks = " or ".join(f"{r}D" for r in self.input_ranks)
            raise ShapeError(f"{self._get_name()}: expected {ranks} input (got "
                             f"{input.ndim}D input of shape {tuple(input.shape)})")
        if input.shape[1] != self.num_features:
            raise ShapeError(
                f"{self._get_name()}: input has {input.shape[1]} channels (axis 1) but the "
                f"layer has num_features={self.num_features}")

    def forward(self, input: Any) -> Any:
        self._check_input(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            # In place, so a num_batches_tracked passed to functional_call is the one counted.
            self.num_batches_tracked[...] = self.num_batches_tracked + 1
            if self.momentum is None:  # a cumulative moving average, as torch
                factor = 1.0 / self.num_batches_tracked
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # Running buffers are updated in training only when tracking; eval reads them.
        use_buffers = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if use_buffers else None,
                            self.running_var if use_buffers else None, self.weight, self.bias,
                            batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs over all axes but the channel."""

    input_ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs over all axes but the channel."""

    input_ranks = (4,)


class LayerNorm(Module):
    """Normalisation over the trailing `normalized_shape` dimensions of each sample."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, dtype: Any = None):
        super().__init__()
        dtype = float_dtype(dtype)
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        weight = np.ones(self.normalized_shape, dtype) if elementwise_affine else None
        bias_value = np.zeros(self.normalized_shape, dtype) if elementwise_affine and bias \
            else None
        self.register_parameter("weight", weight)
        self.register_parameter("bias", bias_value)

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input: Any) -> Any:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
