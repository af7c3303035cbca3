"""bnorm inside PyTorch: an autograd function on bnorm's kernels for CPU
tensors, and drop-in ``BatchNorm1d/2d/3d`` modules.

    import bnorm.torch
    layer = bnorm.torch.BatchNorm2d(64)          # like torch.nn.BatchNorm2d
    bnorm.torch.convert(model)                   # swap a model's batch norms

The modules *are* ``torch.nn.BatchNorm*d`` (subclasses with the same
constructor, buffers, ``state_dict`` keys and train/eval behaviour), so a
checkpoint loads into either and ``isinstance`` checks still hold. Only the
computation differs: float32/float64 CPU tensors (contiguous or
``channels_last``, without copies) go through bnorm; anything else (CUDA,
half precision, mixed dtypes) falls back to PyTorch's own kernel.

Needs PyTorch (``pip install "bnorm[torch]"``); bnorm itself does not.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _functional as _bn

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm", "convert"]

_DTYPES = (torch.float32, torch.float64)


def _np(t: Optional[Tensor]) -> Optional[np.ndarray]:
    """A NumPy view of a CPU tensor (no copy), or None."""
    return None if t is None else t.detach().numpy()


def _supported(x: Tensor, *others: Optional[Tensor]) -> bool:
    if x.device.type != "cpu" or x.dtype not in _DTYPES or x.dim() < 2:
        return False
    if x.is_conj() or x.is_neg() or any(s < 0 for s in x.stride()):
        return False
    for t in others:
        if t is not None and (t.device.type != "cpu" or t.dtype != x.dtype):
            return False
    return True


class _BatchNormFunction(torch.autograd.Function):
    """Forward and backward of batch norm over axis 1, on bnorm's kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, use_batch_stats,
                momentum, eps):
        xn, w, b = _np(x), _np(weight), _np(bias)
        if use_batch_stats:
            y, mean, invstd = _bn.batch_norm_train(
                xn, w, b, eps, axis=1, running_mean=_np(running_mean),
                running_var=_np(running_var), momentum=momentum)
            mean_t, invstd_t = torch.from_numpy(mean), torch.from_numpy(invstd)
        else:
            y = _bn.batch_norm(xn, _np(running_mean), _np(running_var), w, b,
                               eps=eps, axis=1)
            mean_t = running_mean.detach().clone()
            invstd_t = torch.rsqrt(running_var.detach().double() + eps).to(x.dtype)
        ctx.use_batch_stats = use_batch_stats
        ctx.save_for_backward(x, weight, mean_t, invstd_t)
        return torch.from_numpy(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, mean, invstd = ctx.saved_tensors
        dx, dw, db = _bn.batch_norm_backward(
            _np(grad_y), _np(x), _np(mean), _np(invstd), _np(weight), axis=1,
            training=ctx.use_batch_stats)
        need = ctx.needs_input_grad
        return (torch.from_numpy(dx) if need[0] else None,
                torch.from_numpy(dw) if weight is not None and need[1] else None,
                torch.from_numpy(db) if need[2] else None,
                None, None, None, None, None)


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.batch_norm`` with the same arguments and
    results, computed by bnorm for float32/float64 CPU tensors."""
    if not _supported(input, running_mean, running_var, weight, bias):
        return torch.nn.functional.batch_norm(input, running_mean, running_var, weight,
                                              bias, training, momentum, eps)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("running_mean and running_var are required when training=False")
    return _BatchNormFunction.apply(input, weight, bias, running_mean, running_var,
                                    bool(training), float(momentum), float(eps))


class _Forward:
    """The forward of torch.nn.modules.batchnorm._BatchNorm, on bnorm."""

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        use_batch_stats = self.training or (self.running_mean is None
                                            and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if keep else None,
                          self.running_var if keep else None, self.weight, self.bias,
                          use_batch_stats, factor, self.eps)


class BatchNorm1d(_Forward, torch.nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` computed by bnorm (same arguments and state)."""


class BatchNorm2d(_Forward, torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` computed by bnorm (same arguments and state)."""


class BatchNorm3d(_Forward, torch.nn.BatchNorm3d):
    """``torch.nn.BatchNorm3d`` computed by bnorm (same arguments and state)."""


_SWAPS = {torch.nn.BatchNorm1d: BatchNorm1d, torch.nn.BatchNorm2d: BatchNorm2d,
          torch.nn.BatchNorm3d: BatchNorm3d}


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Makes every ``torch.nn.BatchNorm1d/2d/3d`` in ``model`` (itself
    included) compute with bnorm, in place: the same module objects, with the
    same parameters, buffers, hooks and optimizer state, change class to the
    bnorm subclass. Subclasses of those (e.g. SyncBatchNorm, or your own) are
    left alone. Returns ``model``."""
    for module in model.modules():
        new = _SWAPS.get(type(module))
        if new is not None:
            module.__class__ = new
    return model
