"""Inference helpers: per-channel scale/shift, and folding a batch norm into
the convolution or linear layer before it (the C API's
``bnorm_inference_scale_shift`` and ``bnorm_fold_into_layer``)."""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from . import _core
from ._functional import _DATA_DTYPES, _array, _axis, _eps, _per_channel, _real

__all__ = ["inference_scale_shift", "fold_batch_norm"]


def _stat(p: Any, name: str, channels: Optional[int], dtype: Optional[np.dtype]) -> np.ndarray:
    if p is None:
        raise ValueError(f"{name} is required")
    a = _array(p, name)
    _real(a, name)
    _per_channel(a, name, channels)
    if dtype is None:
        dtype = a.dtype if a.dtype in _DATA_DTYPES else np.dtype(np.float64)
    return np.ascontiguousarray(a, dtype=dtype)


def inference_scale_shift(running_mean, running_var, weight=None, bias=None,
                          eps=1e-5) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(scale, shift)`` of inference-mode batch norm:
    ``scale = weight / sqrt(running_var + eps)`` and
    ``shift = bias - running_mean * scale``, so ``y = x * scale + shift``
    (channel axis broadcast as the caller needs). Computed in double and
    rounded once to the dtype of ``running_mean`` (float32 or float64;
    other types give float64)."""
    eps = _eps(eps)
    mean = _stat(running_mean, "running_mean", None, None)
    c, dtype = mean.shape[0], mean.dtype
    var = _stat(running_var, "running_var", c, dtype)
    w = None if weight is None else _stat(weight, "weight", c, dtype)
    b = None if bias is None else _stat(bias, "bias", c, dtype)
    scale = np.empty(c, dtype)
    shift = np.empty(c, dtype)
    _core.inference_scale_shift((mean, var, w, b, scale, shift), eps)
    return scale, shift


def fold_batch_norm(layer_weight, layer_bias, running_mean, running_var,
                    weight=None, bias=None, eps=1e-5, *, axis=0
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Folds an inference-mode batch norm into the layer that feeds it.

    Returns ``(folded_weight, folded_bias)`` such that the layer with them
    gives what the layer followed by the batch norm gave:
    ``folded_weight = layer_weight * a`` along the output-channel ``axis``,
    ``folded_bias = (layer_bias - running_mean) * a + bias``, with
    ``a = weight / sqrt(running_var + eps)``. ``axis`` names the output
    channels of ``layer_weight``: 0 for linear ``[out, in]`` and convolution
    ``[out, in, kh, kw]`` weights (PyTorch), 1 for transposed convolutions
    ``[in, out, kh, kw]``, -1 for channels-last ``[kh, kw, in, out]``.
    ``layer_bias`` may be None (a layer without bias). The result has the
    dtype of ``layer_weight`` (float32 or float64), is computed in double and
    rounded once, and never aliases the inputs.
    """
    w_layer = _array(layer_weight, "layer_weight")
    if w_layer.dtype not in _DATA_DTYPES:
        raise TypeError(
            f"layer_weight has dtype {w_layer.dtype}, expected float32 or float64")
    if w_layer.ndim < 1:
        raise ValueError("layer_weight must have at least 1 dimension")
    a = _axis(axis, w_layer.ndim)
    eps = _eps(eps)
    dtype = w_layer.dtype
    shape = w_layer.shape
    c = shape[a]
    outer, inner = math.prod(shape[:a]), math.prod(shape[a + 1:])
    lb = None if layer_bias is None else _stat(layer_bias, "layer_bias", c, dtype)
    mean = _stat(running_mean, "running_mean", c, dtype)
    var = _stat(running_var, "running_var", c, dtype)
    w = None if weight is None else _stat(weight, "weight", c, dtype)
    b = None if bias is None else _stat(bias, "bias", c, dtype)
    src = np.ascontiguousarray(w_layer)
    folded_w = np.empty(shape, dtype)
    folded_b = np.empty(c, dtype)
    _core.fold_into_layer((src, lb, mean, var, w, b, folded_w, folded_b), outer, c, inner, eps)
    return folded_w, folded_b
