"""The ``BatchNorm`` layer: parameters, running statistics, train/eval
modes and a backward pass, with PyTorch's ``torch.nn.BatchNorm*d`` behaviour
and ``state_dict`` keys."""

from __future__ import annotations

import operator
from typing import Any, Dict, Optional

import numpy as np

from ._functional import _array, _eps, _num_features, _is_data_dtype, _momentum, _param_dtype, \
    batch_norm, batch_norm_backward, batch_norm_train

from ._fold import fold_batch_norm, inference_scale_shift

__all__ = ["BatchNorm"]


class BatchNorm:
    """Batch normalization over the channel axis ``axis`` of its input.

    In training mode (the default) each call normalizes with the batch
    statistics and, with ``track_running_stats``, updates the running
    statistics: ``running = (1 - momentum) * running + momentum * batch``, or
    a cumulative average when ``momentum`` is None. In eval mode it
    normalizes with the running statistics (or, without
    ``track_running_stats``, with the batch statistics).
    ``backward(dy)`` returns dx for the last ``forward`` and sets
    ``grad_weight`` and ``grad_bias``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, axis: int = 1,
                 dtype: Any = np.float32):
        n = _num_features(num_features)
        dt = np.dtype(dtype)
        if not _is_data_dtype(dt):
            raise TypeError(
                f"dtype must be float32, float64, float16 or bfloat16, got {dt}")
        self.num_features = n
        self.eps = _eps(eps)
        self.momentum = None if momentum is None else _momentum(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.axis = operator.index(axis)
        self.dtype = dt  # of the data; parameters and statistics: param_dtype
        self.param_dtype = _param_dtype(dt)
        dt = self.param_dtype
        self.weight = np.ones(n, dt) if self.affine else None
        self.bias = np.zeros(n, dt) if self.affine else None
        if self.track_running_stats:
            self.running_mean: Optional[np.ndarray] = np.zeros(n, dt)
            self.running_var: Optional[np.ndarray] = np.ones(n, dt)
            self.num_batches_tracked: Optional[int] = 0
        else:
            self.running_mean = self.running_var = None
            self.num_batches_tracked = None
        self.training = True
        self.grad_weight: Optional[np.ndarray] = None
        self.grad_bias: Optional[np.ndarray] = None
        self._saved = None  # (x, mean, invstd, batch_stats) of the last forward

    def __repr__(self) -> str:
        return (f"BatchNorm({self.num_features}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}, "
                f"axis={self.axis}, dtype={self.dtype})")

    # -- modes ------------------------------------------------------------
    def train(self, mode: bool = True) -> "BatchNorm":
        self.training = bool(mode)
        return self

    def eval(self) -> "BatchNorm":
        return self.train(False)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight[...] = 1
            self.bias[...] = 0

    # -- forward and backward ---------------------------------------------
    def _check_input(self, x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            x = _array(x, "x")
        if x.dtype != self.dtype:
            raise TypeError(
                f"x has dtype {x.dtype}, expected {self.dtype} (the layer's dtype)")
        if x.ndim < 2:
            raise ValueError(
                f"x must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
        if not -x.ndim <= self.axis < x.ndim:
            raise np.exceptions.AxisError(
                f"axis {self.axis} is out of range for an input with {x.ndim} dimensions")
        if x.shape[self.axis] != self.num_features:
            raise ValueError(
                f"x has {x.shape[self.axis]} channels on axis {self.axis}, "
                f"expected {self.num_features} (num_features)")
        return x

    def forward(self, x: Any) -> np.ndarray:
        x = self._check_input(x)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            update = self.training and self.track_running_stats
            factor = 0.0
            if update:
                if self.momentum is None:  # cumulative moving average
                    factor = 1.0 / (self.num_batches_tracked + 1)
                else:
                    factor = self.momentum
            y, mean, invstd = batch_norm_train(
                x, self.weight, self.bias, self.eps, axis=self.axis,
                running_mean=self.running_mean if update else None,
                running_var=self.running_var if update else None,
                momentum=factor)
            if update:
                self.num_batches_tracked += 1
        else:
            y = batch_norm(x, self.running_mean, self.running_var,
                           self.weight, self.bias, False, eps=self.eps,
                           axis=self.axis)
            mean = self.running_mean.copy()
            invstd = (1.0 / np.sqrt(self.running_var.astype(np.float64)
                                    + self.eps)).astype(self.param_dtype)
        self._saved = (x, mean, invstd, use_batch_stats)
        return y

    __call__ = forward

    def backward(self, dy: Any) -> np.ndarray:
        if self._saved is None:
            raise RuntimeError("backward() called before forward()")
        x, mean, invstd, batch_stats = self._saved
        dx, dw, db = batch_norm_backward(dy, x, mean, invstd, self.weight,
                                         axis=self.axis, training=batch_stats)
        if self.affine:
            self.grad_weight, self.grad_bias = dw, db
        return dx

    def recompute_statistics(self, batches: Any) -> "PopulationStats":
        """Replaces the running statistics by the population statistics of
        Algorithm 2 over ``batches`` (an iterable of this layer's inputs):
        the "precise BN" step before freezing a network for inference.
        Weights, mode and ``num_batches_tracked`` are left alone. Returns the
        :class:`bnorm.PopulationStats`. Raises ValueError if ``batches`` is
        empty (the running statistics are then unchanged)."""
        from ._population import PopulationStats
        if not self.track_running_stats:
            raise RuntimeError(
                "this layer has no running statistics (track_running_stats=False)")
        pop = PopulationStats(self.num_features, axis=self.axis)
        for x in batches:
            pop.update(self._check_input(x))
        if pop.batches == 0:
            raise ValueError("batches is empty: no statistics to recompute")
        self.running_mean[...] = pop.mean
        self.running_var[...] = pop.var
        return pop

    # -- inference helpers ---------------------------------------------------
    def _inference_stats(self) -> tuple:
        if not self.track_running_stats:
            raise RuntimeError(
                "this layer has no running statistics (track_running_stats=False)")
        return self.running_mean, self.running_var

    def inference_scale_shift(self) -> tuple:
        """``(scale, shift)`` of this layer in eval mode: y = x * scale + shift
        per channel (see :func:`bnorm.inference_scale_shift`)."""
        rm, rv = self._inference_stats()
        return inference_scale_shift(rm, rv, self.weight, self.bias, self.eps)

    def fold_into(self, layer_weight: Any, layer_bias: Any = None, *,
                  axis: int = 0) -> tuple:
        """``(folded_weight, folded_bias)`` of the convolution or linear
        layer that feeds this one, with this layer (in eval mode) folded in
        (see :func:`bnorm.fold_batch_norm`)."""
        rm, rv = self._inference_stats()
        return fold_batch_norm(layer_weight, layer_bias, rm, rv, self.weight,
                               self.bias, self.eps, axis=axis)

    # -- state -------------------------------------------------------------
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the state under PyTorch's key names."""
        state: Dict[str, np.ndarray] = {}
        if self.affine:
            state["weight"] = self.weight.copy()
            state["bias"] = self.bias.copy()
        if self.track_running_stats:
            state["running_mean"] = self.running_mean.copy()
            state["running_var"] = self.running_var.copy()
            state["num_batches_tracked"] = np.array(self.num_batches_tracked,
                                                    dtype=np.int64)
        return state

    def load_state_dict(self, state: Dict[str, Any], strict: bool = True) -> None:
        """Loads a state (e.g. from ``state_dict()`` or a PyTorch
        ``BatchNorm*d``, whose CPU tensors convert with numpy.asarray)."""
        expected = set(self.state_dict())
        given = set(state)
        if strict and given != expected:
            missing = sorted(expected - given)
            unexpected = sorted(given - expected)
            raise KeyError(f"state_dict does not match: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        new = {}
        for key in expected & given:
            value = np.asarray(state[key])
            if key == "num_batches_tracked":
                if value.size != 1:
                    raise ValueError("num_batches_tracked must hold one integer")
                new[key] = int(value.reshape(()))
                continue
            if value.shape != (self.num_features,):
                raise ValueError(f"{key} has shape {value.shape}, expected "
                                 f"({self.num_features},)")
            new[key] = value
        for key, value in new.items():  # all checked: now write
            if key == "num_batches_tracked":
                self.num_batches_tracked = value
            else:
                getattr(self, key)[...] = value
