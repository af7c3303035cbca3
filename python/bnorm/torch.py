"""bnorm inside PyTorch: operators registered with ``torch.library`` (namespace
``bnorm``), and drop-in ``BatchNorm1d/2d/3d`` modules on them.

    import bnorm.torch
    layer = bnorm.torch.BatchNorm2d(64)          # like torch.nn.BatchNorm2d
    bnorm.torch.convert(model)                   # swap a model's batch norms
    torch.compile(model, fullgraph=True)         # the ops compile as they are

The modules *are* ``torch.nn.BatchNorm*d`` (subclasses with the same
constructor, buffers, ``state_dict`` keys and train/eval behaviour), so a
checkpoint loads into either and ``isinstance`` checks still hold. Only the
computation differs: CPU tensors of float32, float64, float16 and bfloat16
(the half types with float32 parameters and running statistics, as in
PyTorch's mixed-type batch norm; bfloat16 needs ml_dtypes) go through bnorm,
in their own memory format (contiguous, ``channels_last``,
``channels_last_3d``: y and dx keep it, with no copy). Anything else (CUDA,
other dtypes, half-precision running statistics) falls back to PyTorch's
own kernel.

The operators, with fake (meta) implementations and autograd formulas, so
that ``torch.compile``, ``torch.export`` and ``torch.library.opcheck`` work:

    torch.ops.bnorm.batch_norm_train(x, weight, bias, running_mean, running_var,
                                     momentum, eps)
        -> (y, save_mean, save_invstd, new_running_mean, new_running_var)
    torch.ops.bnorm.batch_norm_infer(x, running_mean, running_var, weight, bias,
                                     eps) -> y
    torch.ops.bnorm.batch_norm_backward(dy, x, mean, invstd, weight,
                                        training) -> (dx, dweight, dbias)

Batch norm with what follows it, for whole networks (``fuse``):

    torch.ops.bnorm.batch_norm_act_train(x, residual, weight, bias, running_mean,
                                         running_var, momentum, eps, activation)
    torch.ops.bnorm.batch_norm_act_infer(x, residual, running_mean, running_var,
                                         weight, bias, eps, activation) -> y
    torch.ops.bnorm.batch_norm_act_backward(dy, x, y, mean, invstd, weight, bias,
                                            training, activation, residual)
        -> (dx, dweight, dbias, dresidual)

(``activation``: "identity", "relu" or "relu6")

and In-Place Activated Batch Norm (``InPlaceABN``, ``convert_inplace_abn``):
``torch.ops.bnorm.inplace_abn_train``, ``inplace_abn_infer`` and
``batch_norm_backward_from_output``.

``SyncBatchNorm`` (a ``torch.nn.SyncBatchNorm``) synchronizes the statistics
over a ``torch.distributed`` process group on CPU tensors (gloo), and
``convert_sync_batchnorm(model)`` builds it from a model's batch norms.

Needs PyTorch (``pip install "bnorm[torch]"``); bnorm itself does not.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from . import _functional as _bn

try:
    import ml_dtypes as _ml
except ImportError:  # bfloat16 tensors then go to PyTorch's kernel
    _ml = None

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNormAct1d", "BatchNormAct2d",
           "BatchNormAct3d", "InPlaceABN", "SyncBatchNorm", "batch_norm", "batch_norm_act",
           "convert", "convert_inplace_abn", "convert_sync_batchnorm", "fuse"]

_DATA = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _param_dtype(dtype: torch.dtype) -> torch.dtype:
    """Parameters and statistics: float64 for float64 data, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _supported(x: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor], bias: Optional[Tensor]) -> bool:
    """Whether bnorm computes this call (else PyTorch's kernel does). Only
    device, dtype and rank: decided at trace time under torch.compile."""
    if x.device.type != "cpu" or x.dtype not in _DATA or x.dim() < 2:
        return False
    if x.dtype == torch.bfloat16 and _ml is None:
        return False
    pdtype = _param_dtype(x.dtype)
    for t in (running_mean, running_var):  # updated in place: the parameter dtype
        if t is not None and (t.device.type != "cpu" or t.dtype != pdtype):
            return False
    for t in (weight, bias):
        if t is not None and (t.device.type != "cpu" or t.dtype not in (x.dtype, pdtype)):
            return False
    return True


# ---- between tensors and bnorm's arrays (no copies) ---------------------------

def _np(t: Optional[Tensor]) -> Optional[np.ndarray]:
    """A NumPy view of a CPU tensor's memory (no copy), or None."""
    if t is None:
        return None
    if t.requires_grad:  # (detach is an op through the dispatcher: only when needed)
        t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_ml.bfloat16)
    return t.numpy()


def _param(t: Optional[Tensor], pdtype: torch.dtype) -> Optional[np.ndarray]:
    """An input parameter as bnorm takes it (the parameter dtype)."""
    if t is None:
        return None
    return _np(t if t.dtype == pdtype else t.to(pdtype))


# The hot paths below ask torch as little as they can: inside a network each
# torch call (an op through the dispatcher most of all: movedim, detach,
# empty_like) finds its code and data out of the caches after a convolution,
# and costs 4-23 us there against about 1 us in a loop (measured with the
# caches flushed between calls). So the layout is read once per tensor, off
# its NumPy view (a transpose in NumPy, not a movedim in torch).

def _channels_last_view(a: np.ndarray) -> np.ndarray:
    """a (N, C, ...) seen with axis 1 moved last (a NumPy view)."""
    return a.transpose((0, *range(2, a.ndim), 1))


def _plain(t: Tensor) -> Tensor:
    """t with any pending negation applied (numpy() refuses it; the
    conjugate bit cannot be set on the real dtypes bnorm takes)."""
    return t.resolve_neg() if t.is_neg() else t


def _arrays(t: Tensor) -> Optional[Tuple[np.ndarray, int]]:
    """(a NumPy view of t in its memory order, the channel axis there): (t's
    view, 1) when contiguous, (with axis 1 moved last, -1) when
    channels-last; None for any other layout."""
    a = _np(t)
    if a.flags.c_contiguous:
        return a, 1
    if a.ndim >= 3:
        m = _channels_last_view(a)
        if m.flags.c_contiguous:
            return m, -1
    return None


def _input(x: Tensor) -> Tuple[Tensor, np.ndarray, int]:
    """(x, or a contiguous copy when bnorm cannot read its layout; its
    NumPy view in memory order; the channel axis there)."""
    x = _plain(x)
    r = _arrays(x)
    if r is None:
        x = x.contiguous()
        r = (_np(x), 1)
    return x, r[0], r[1]


def _as_input(t: Tensor, axis: int) -> np.ndarray:
    """The NumPy view of t (laid out as the input: an output of
    _output_like, or a tensor with the input's strides) in the input's
    memory order."""
    a = _np(t)
    return a if axis == 1 else _channels_last_view(a)


def _output_like(x: Tensor) -> Tensor:
    """An output with x's memory format (x dense): PyTorch's empty_like."""
    return torch.empty_like(x, memory_format=torch.preserve_format)


def _laid_out_like(dy: Tensor, x: Tensor) -> Tensor:
    """dy in x's memory format (a copy only when it is in another one)."""
    return dy if dy.stride() == x.stride() else _output_like(x).copy_(dy)


def _new_running(x: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                 in_place: bool) -> Tuple[bool, Tensor, Tensor]:
    """(tracked, new_mean, new_var): where a training forward writes the
    updated running statistics. In place (eager calls): the buffers
    themselves; else copies, returned by the functional operator, or
    (0,)-shaped tensors without running statistics."""
    tracked = running_mean is not None and running_var is not None
    if in_place:
        return tracked, running_mean, running_var
    pdtype = _param_dtype(x.dtype)
    if not tracked:
        return False, x.new_empty((0,), dtype=pdtype), x.new_empty((0,), dtype=pdtype)
    return True, running_mean.clone(), running_var.clone()


def _train_fake(x: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor]):
    """The fake (meta) outputs of a training forward operator: (y, mean,
    invstd, new_running_mean, new_running_var)."""
    pdtype = _param_dtype(x.dtype)
    c = x.shape[1]
    tracked = running_mean is not None and running_var is not None
    return (_output_like(x), x.new_empty((c,), dtype=pdtype), x.new_empty((c,), dtype=pdtype),
            torch.empty_like(running_mean) if tracked else x.new_empty((0,), dtype=pdtype),
            torch.empty_like(running_var) if tracked else x.new_empty((0,), dtype=pdtype))


# ---- the operators --------------------------------------------------------------

# The training forward is a functional operator (autograd needs one): the
# updated running statistics come back as new tensors (computed by bnorm in
# double from the old ones, as its in-place update does), which the caller
# copies into its buffers; (0,)-shaped when there are none.
def _train_impl(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                running_mean: Optional[Tensor], running_var: Optional[Tensor], momentum: float,
                eps: float, in_place: bool = False) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x, xs, axis = _input(x)
    pdtype = _param_dtype(x.dtype)
    y = _output_like(x)
    tracked, new_mean, new_var = _new_running(x, running_mean, running_var, in_place)
    _, mean, invstd = _bn.batch_norm_train(
        xs, _param(weight, pdtype), _param(bias, pdtype), eps, axis=axis,
        running_mean=_np(new_mean) if tracked else None,
        running_var=_np(new_var) if tracked else None, momentum=momentum,
        out=_as_input(y, axis))
    return y, torch.from_numpy(mean), torch.from_numpy(invstd), new_mean, new_var


def _train_functional(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                      running_mean: Optional[Tensor], running_var: Optional[Tensor],
                      momentum: float, eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _train_impl(x, weight, bias, running_mean, running_var, momentum, eps)


_train_op = torch.library.custom_op("bnorm::batch_norm_train", _train_functional,
                                    mutates_args=(), device_types="cpu")


@_train_op.register_fake
def _(x, weight, bias, running_mean, running_var, momentum, eps):
    return _train_fake(x, running_mean, running_var)


def _infer_impl(x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Optional[Tensor],
              bias: Optional[Tensor], eps: float) -> Tensor:
    x, xs, axis = _input(x)
    pdtype = _param_dtype(x.dtype)
    y = _output_like(x)
    _bn.batch_norm(xs, _param(running_mean, pdtype), _param(running_var, pdtype),
                   _param(weight, pdtype), _param(bias, pdtype), eps=eps, axis=axis,
                   out=_as_input(y, axis))
    return y


_infer_op = torch.library.custom_op("bnorm::batch_norm_infer", _infer_impl, mutates_args=(),
                                    device_types="cpu")


@_infer_op.register_fake
def _(x, running_mean, running_var, weight, bias, eps):
    return _output_like(x)


def _backward_impl(dy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor,
                 weight: Optional[Tensor], training: bool) -> Tuple[Tensor, Tensor, Tensor]:
    x, xs, axis = _input(x)
    pdtype = _param_dtype(x.dtype)
    dx = _output_like(x)
    dys = _as_input(_laid_out_like(_plain(dy), x), axis)
    _, dw, db = _bn.batch_norm_backward(
        dys, xs, _param(mean, pdtype), _param(invstd, pdtype),
        _param(weight, pdtype), axis=axis, training=training, out=_as_input(dx, axis))
    return dx, torch.from_numpy(dw), torch.from_numpy(db)


_backward_op = torch.library.custom_op("bnorm::batch_norm_backward", _backward_impl,
                                       mutates_args=(), device_types="cpu")


@_backward_op.register_fake
def _(dy, x, mean, invstd, weight, training):
    pdtype = _param_dtype(x.dtype)
    c = x.shape[1]
    return _output_like(x), x.new_empty((c,), dtype=pdtype), x.new_empty((c,), dtype=pdtype)


def _save(ctx, x, weight, bias, mean, invstd):
    """What every backward needs: x, weight, the statistics, and the dtypes
    of weight and bias (their gradients come back in them)."""
    ctx.param_dtypes = (None if weight is None else weight.dtype,
                        None if bias is None else bias.dtype)
    ctx.save_for_backward(x, weight, mean, invstd)


def _grads(ctx, dx, dw, db, iw, ib):
    """The gradients of x and of weight and bias (inputs iw and ib of the
    operator) in the dtypes of the inputs."""
    need = ctx.needs_input_grad
    w_dtype, b_dtype = ctx.param_dtypes
    return (dx if need[0] else None,
            dw.to(w_dtype) if w_dtype is not None and need[iw] else None,
            db.to(b_dtype) if b_dtype is not None and need[ib] else None)


def _backward(ctx, grad_y, training, backward, iw, ib):
    """(dx, dweight, dbias) from what _save kept, through `backward` (the
    registered operator, or its implementation in eager calls)."""
    x, weight, mean, invstd = ctx.saved_tensors
    dx, dw, db = backward(grad_y, x, mean, invstd, weight, training)
    return _grads(ctx, dx, dw, db, iw, ib)


def _train_setup(ctx, inputs, output):
    x, weight, bias = inputs[:3]
    _, mean, invstd, new_mean, new_var = output
    ctx.mark_non_differentiable(mean, invstd, new_mean, new_var)
    _save(ctx, x, weight, bias, mean, invstd)


def _train_backward(ctx, grad_y, *unused):
    grads = _backward(ctx, grad_y, True, torch.ops.bnorm.batch_norm_backward, 1, 2)
    return (*grads, None, None, None, None)


torch.library.register_autograd("bnorm::batch_norm_train", _train_backward,
                                setup_context=_train_setup)


def _infer_setup(ctx, inputs, output):
    x, running_mean, running_var, weight, bias, eps = inputs
    pdtype = _param_dtype(x.dtype)
    # frozen statistics: constants of the backward (a copy: the buffers may
    # change before it runs)
    mean = running_mean.detach().to(pdtype, copy=True)
    invstd = torch.rsqrt(running_var.detach().to(torch.float64) + eps).to(pdtype)
    _save(ctx, x, weight, bias, mean, invstd)


def _infer_backward(ctx, grad_y):
    gx, gw, gb = _backward(ctx, grad_y, False, torch.ops.bnorm.batch_norm_backward, 3, 4)
    return gx, None, None, gw, gb, None


torch.library.register_autograd("bnorm::batch_norm_infer", _infer_backward,
                                setup_context=_infer_setup)


# ---- eager calls: the same computation without the dispatcher ---------------------
# A registered operator costs about 100 us of Python dispatch per call in
# eager mode; outside torch.compile the modules call these autograd functions
# on the same implementations instead (the same bits), and the operators
# serve compile, export and any direct torch.ops.bnorm call.

class _EagerTrain(torch.autograd.Function):
    """The training forward, updating the running statistics in place."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        y, mean, invstd, _, _ = _train_impl(x, weight, bias, running_mean, running_var,
                                            momentum, eps, in_place=True)
        ctx.mark_non_differentiable(mean, invstd)
        _save(ctx, x, weight, bias, mean, invstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        return (*_backward(ctx, grad_y, True, _backward_impl, 1, 2), None, None, None, None)


class _EagerInfer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, eps):
        y = _infer_impl(x, running_mean, running_var, weight, bias, eps)
        _infer_setup(ctx, (x, running_mean, running_var, weight, bias, eps), y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        gx, gw, gb = _backward(ctx, grad_y, False, _backward_impl, 3, 4)
        return gx, None, None, gw, gb, None


def _compiling() -> bool:
    return torch.compiler.is_compiling()


# ---- the functional form and the modules -------------------------------------------

def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.batch_norm`` with the same arguments and
    results, computed by bnorm where it can (see the module's docstring)."""
    if not _supported(input, running_mean, running_var, weight, bias):
        return torch.nn.functional.batch_norm(input, running_mean, running_var, weight,
                                              bias, training, momentum, eps)
    compiling = _compiling()
    # eager and nothing to differentiate (eval under no_grad, say): no graph
    direct = not compiling and not (torch.is_grad_enabled() and (
        input.requires_grad or (weight is not None and weight.requires_grad)
        or (bias is not None and bias.requires_grad)))
    if training:
        if direct:
            return _train_impl(input, weight, bias, running_mean, running_var,
                               float(momentum), float(eps), in_place=True)[0]
        if not compiling:
            return _EagerTrain.apply(input, weight, bias, running_mean, running_var,
                                     float(momentum), float(eps))
        y, _, _, new_mean, new_var = torch.ops.bnorm.batch_norm_train(
            input, weight, bias, running_mean, running_var, float(momentum), float(eps))
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.copy_(new_mean)
                running_var.copy_(new_var)
        return y
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when training=False")
    if direct:
        return _infer_impl(input, running_mean, running_var, weight, bias, float(eps))
    infer = torch.ops.bnorm.batch_norm_infer if compiling else _EagerInfer.apply
    return infer(input, running_mean, running_var, weight, bias, float(eps))


def _module_step(m) -> Tuple[float, bool, Optional[Tensor], Optional[Tensor]]:
    """What torch.nn.modules.batchnorm._BatchNorm.forward does before its
    kernel: counts the batch, and returns (momentum factor, whether to use
    batch statistics, running_mean, running_var to pass)."""
    factor = 0.0 if m.momentum is None else m.momentum
    if m.training and m.track_running_stats and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
        factor = 1.0 / float(m.num_batches_tracked) if m.momentum is None else m.momentum
    use_batch_stats = m.training or (m.running_mean is None and m.running_var is None)
    keep = not m.training or m.track_running_stats
    return (factor, use_batch_stats, m.running_mean if keep else None,
            m.running_var if keep else None)


class _Forward:
    """The forward of torch.nn.modules.batchnorm._BatchNorm, on bnorm."""

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor, use_batch_stats, running_mean, running_var = _module_step(self)
        return batch_norm(input, running_mean, running_var, self.weight, self.bias,
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


# ---- batch norm fused with a residual addition and a ReLU or ReLU6 ------------------
# y = act?(BN(x) + residual?) in bnorm's one pass, and its backward in one
# pass: what bnorm.torch.fuse puts into a model. The ReLU's mask comes from x
# and the statistics when there is no residual (so the output need not be
# kept for the backward), else from y.

# The fused activations (None: none), each with PyTorch's function for the
# fallback; the operators name them "identity", "relu" and "relu6".
_ACT_FALLBACK = {None: lambda y: y, "relu": torch.relu,
                 "relu6": torch.nn.functional.relu6}


def _bn_activation(act: str) -> Optional[str]:
    """The op's activation ("identity" or a fused one) as bnorm's NumPy
    functions take it."""
    if act == "identity":
        return None
    if act is None or act not in _ACT_FALLBACK:
        raise ValueError(f"activation must be 'identity', 'relu' or 'relu6', got {act!r}")
    return act


def _act_supported(x: Tensor, residual: Optional[Tensor], running_mean, running_var,
                   weight, bias) -> bool:
    if not _supported(x, running_mean, running_var, weight, bias):
        return False
    return residual is None or (residual.device == x.device and residual.dtype == x.dtype
                                and residual.shape == x.shape)


def _residual_like(residual: Optional[Tensor], x: Tensor, axis: int) -> Optional[np.ndarray]:
    """The residual's NumPy view in the memory order of x (whose channel
    axis there is `axis`): a copy only when its layout differs from x's."""
    if residual is None:
        return None
    return _as_input(_laid_out_like(_plain(residual), x), axis)


def _act_train_impl(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor],
                    bias: Optional[Tensor], running_mean: Optional[Tensor],
                    running_var: Optional[Tensor], momentum: float, eps: float, act: str,
                    in_place: bool = False) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x, xs, axis = _input(x)
    pdtype = _param_dtype(x.dtype)
    y = _output_like(x)
    tracked, new_mean, new_var = _new_running(x, running_mean, running_var, in_place)
    _, mean, invstd = _bn.batch_norm_train(
        xs, _param(weight, pdtype), _param(bias, pdtype), eps, axis=axis,
        running_mean=_np(new_mean) if tracked else None,
        running_var=_np(new_var) if tracked else None, momentum=momentum,
        out=_as_input(y, axis), activation=_bn_activation(act),
        residual=_residual_like(residual, x, axis))
    return y, torch.from_numpy(mean), torch.from_numpy(invstd), new_mean, new_var


def _act_train_functional(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor],
                          bias: Optional[Tensor], running_mean: Optional[Tensor],
                          running_var: Optional[Tensor], momentum: float, eps: float,
                          act: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _act_train_impl(x, residual, weight, bias, running_mean, running_var, momentum,
                           eps, act)


_act_train_op = torch.library.custom_op("bnorm::batch_norm_act_train", _act_train_functional,
                                        mutates_args=(), device_types="cpu")


@_act_train_op.register_fake
def _(x, residual, weight, bias, running_mean, running_var, momentum, eps, act):
    return _train_fake(x, running_mean, running_var)


def _act_infer_impl(x: Tensor, residual: Optional[Tensor], running_mean: Tensor,
                    running_var: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                    eps: float, act: str) -> Tensor:
    x, xs, axis = _input(x)
    pdtype = _param_dtype(x.dtype)
    y = _output_like(x)
    _bn.batch_norm(xs, _param(running_mean, pdtype), _param(running_var, pdtype),
                   _param(weight, pdtype), _param(bias, pdtype), eps=eps, axis=axis,
                   out=_as_input(y, axis), activation=_bn_activation(act),
                   residual=_residual_like(residual, x, axis))
    return y


_act_infer_op = torch.library.custom_op("bnorm::batch_norm_act_infer", _act_infer_impl,
                                        mutates_args=(), device_types="cpu")


@_act_infer_op.register_fake
def _(x, residual, running_mean, running_var, weight, bias, eps, act):
    return _output_like(x)


def _act_backward_impl(dy: Tensor, x: Tensor, y: Optional[Tensor], mean: Tensor,
                       invstd: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                       training: bool, act: str,
                       residual: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    x, xs, axis = _input(x)
    pdtype = _param_dtype(x.dtype)
    dx = _output_like(x)
    dres = _output_like(x) if residual else x.new_empty((0,))
    dys = _as_input(_laid_out_like(_plain(dy), x), axis)
    ys = None if y is None else _as_input(_laid_out_like(_plain(y), x), axis)
    _, dw, db, *rest = _bn._backward_fused(
        dys, xs, _param(mean, pdtype), _param(invstd, pdtype),
        _param(weight, pdtype), axis, training, _bn_activation(act), ys,
        _param(bias, pdtype) if act != "identity" and y is None else None, residual,
        _as_input(dx, axis), dresidual_out=_as_input(dres, axis) if residual else None)
    return dx, torch.from_numpy(dw), torch.from_numpy(db), dres


_act_backward_op = torch.library.custom_op("bnorm::batch_norm_act_backward",
                                           _act_backward_impl, mutates_args=(),
                                           device_types="cpu")


@_act_backward_op.register_fake
def _(dy, x, y, mean, invstd, weight, bias, training, act, residual):
    pdtype = _param_dtype(x.dtype)
    c = x.shape[1]
    return (_output_like(x), x.new_empty((c,), dtype=pdtype), x.new_empty((c,), dtype=pdtype),
            _output_like(x) if residual else x.new_empty((0,)))


def _act_save(ctx, x, residual, weight, bias, mean, invstd, y, act):
    """The fused backward's inputs: x, weight, bias and the statistics, and
    the output y only when the activation's mask cannot be recomputed from x
    (a residual was added)."""
    ctx.param_dtypes = (None if weight is None else weight.dtype,
                        None if bias is None else bias.dtype)
    ctx.act, ctx.residual = act, residual is not None
    keep_y = act != "identity" and residual is not None
    ctx.save_for_backward(x, weight, bias, mean, invstd, y if keep_y else None)


def _act_backward(ctx, grad_y, training, backward, iw, ib):
    """(dx, dresidual, dweight, dbias) for the inputs (x, residual, and
    weight and bias at iw and ib)."""
    x, weight, bias, mean, invstd, y = ctx.saved_tensors
    # dresidual only when asked for: otherwise the kernel writes no tensor for it
    want_dres = ctx.residual and ctx.needs_input_grad[1]
    dx, dw, db, dres = backward(grad_y, x, y, mean, invstd, weight, bias, training, ctx.act,
                                want_dres)
    gx, gw, gb = _grads(ctx, dx, dw, db, iw, ib)
    return gx, (dres if want_dres else None), gw, gb


def _act_train_setup(ctx, inputs, output):
    x, residual, weight, bias = inputs[:4]
    y, mean, invstd, new_mean, new_var = output
    ctx.mark_non_differentiable(mean, invstd, new_mean, new_var)
    _act_save(ctx, x, residual, weight, bias, mean, invstd, y, inputs[8])


def _act_train_backward(ctx, grad_y, *unused):
    gx, gr, gw, gb = _act_backward(ctx, grad_y, True, torch.ops.bnorm.batch_norm_act_backward,
                                   2, 3)
    return gx, gr, gw, gb, None, None, None, None, None


torch.library.register_autograd("bnorm::batch_norm_act_train", _act_train_backward,
                                setup_context=_act_train_setup)


def _act_frozen_stats(x, running_mean, running_var, eps):
    pdtype = _param_dtype(x.dtype)
    mean = running_mean.detach().to(pdtype, copy=True)
    invstd = torch.rsqrt(running_var.detach().to(torch.float64) + eps).to(pdtype)
    return mean, invstd


def _act_infer_setup(ctx, inputs, output):
    x, residual, running_mean, running_var, weight, bias, eps, act = inputs
    mean, invstd = _act_frozen_stats(x, running_mean, running_var, eps)
    _act_save(ctx, x, residual, weight, bias, mean, invstd, output, act)


def _act_infer_backward(ctx, grad_y):
    gx, gr, gw, gb = _act_backward(ctx, grad_y, False, torch.ops.bnorm.batch_norm_act_backward,
                                   4, 5)
    return gx, gr, None, None, gw, gb, None, None


torch.library.register_autograd("bnorm::batch_norm_act_infer", _act_infer_backward,
                                setup_context=_act_infer_setup)


class _EagerActTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, running_mean, running_var, momentum, eps, act):
        y, mean, invstd, _, _ = _act_train_impl(x, residual, weight, bias, running_mean,
                                                running_var, momentum, eps, act, in_place=True)
        ctx.mark_non_differentiable(mean, invstd)
        _act_save(ctx, x, residual, weight, bias, mean, invstd, y, act)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        gx, gr, gw, gb = _act_backward(ctx, grad_y, True, _act_backward_impl, 2, 3)
        return gx, gr, gw, gb, None, None, None, None, None


class _EagerActInfer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, running_mean, running_var, weight, bias, eps, act):
        y = _act_infer_impl(x, residual, running_mean, running_var, weight, bias, eps, act)
        _act_infer_setup(ctx, (x, residual, running_mean, running_var, weight, bias, eps, act),
                         y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        gx, gr, gw, gb = _act_backward(ctx, grad_y, False, _act_backward_impl, 4, 5)
        return gx, gr, None, None, gw, gb, None, None


def batch_norm_act(input: Tensor, running_mean: Optional[Tensor],
                   running_var: Optional[Tensor], weight: Optional[Tensor] = None,
                   bias: Optional[Tensor] = None, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5, *,
                   residual: Optional[Tensor] = None, activation: Optional[str] = "relu") -> Tensor:
    """``act(F.batch_norm(input, ...) + residual)`` as one bnorm op, forward
    and backward: ``residual`` None or a tensor of input's shape and dtype,
    ``activation`` "relu", "relu6" or None. Falls back to PyTorch's ops where
    bnorm does not compute the batch norm."""
    if activation not in _ACT_FALLBACK:
        raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
    act = "identity" if activation is None else activation
    if not _act_supported(input, residual, running_mean, running_var, weight, bias):
        y = torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias,
                                           training, momentum, eps)
        if residual is not None:
            y = y + residual
        return _ACT_FALLBACK[activation](y)
    compiling = _compiling()
    grads = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, residual, weight, bias))
    direct = not compiling and not grads
    if training:
        if direct:
            return _act_train_impl(input, residual, weight, bias, running_mean, running_var,
                                   float(momentum), float(eps), act, in_place=True)[0]
        if not compiling:
            return _EagerActTrain.apply(input, residual, weight, bias, running_mean,
                                        running_var, float(momentum), float(eps), act)
        y, _, _, new_mean, new_var = torch.ops.bnorm.batch_norm_act_train(
            input, residual, weight, bias, running_mean, running_var, float(momentum),
            float(eps), act)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.copy_(new_mean)
                running_var.copy_(new_var)
        return y
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when training=False")
    if direct:
        return _act_infer_impl(input, residual, running_mean, running_var, weight, bias,
                               float(eps), act)
    infer = torch.ops.bnorm.batch_norm_act_infer if compiling else _EagerActInfer.apply
    return infer(input, residual, running_mean, running_var, weight, bias, float(eps), act)


class _ActForward:
    """A batch norm module that also adds a residual (``forward(input,
    residual=None)``) and applies its ``activation`` ("relu", "relu6" or
    None), as one op: what ``bnorm.torch.fuse`` makes of a batch norm and
    what follows it."""

    activation: Optional[str] = "relu"

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        self._check_input_dim(input)
        factor, use_batch_stats, running_mean, running_var = _module_step(self)
        return batch_norm_act(input, running_mean, running_var, self.weight, self.bias,
                              use_batch_stats, factor, self.eps, residual=residual,
                              activation=self.activation)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation!r}"


class BatchNormAct1d(_ActForward, torch.nn.BatchNorm1d):
    """BatchNorm1d + residual + activation as one op (see bnorm.torch.fuse)."""


class BatchNormAct2d(_ActForward, torch.nn.BatchNorm2d):
    """BatchNorm2d + residual + activation as one op (see bnorm.torch.fuse)."""


class BatchNormAct3d(_ActForward, torch.nn.BatchNorm3d):
    """BatchNorm3d + residual + activation as one op (see bnorm.torch.fuse)."""


def fuse(model: torch.nn.Module) -> torch.nn.Module:
    """A model computing the same function as ``model`` in which each batch
    norm followed by a ReLU, by a residual addition, or by both, runs as one
    bnorm op (forward and backward). See ``bnorm._fuse`` for the patterns
    found and what happens where the model does not trace."""
    from . import _fuse
    return _fuse.fuse(model)


# ---- In-Place Activated Batch Norm --------------------------------------------------
# y = act(BN(x)) with scale |weight| + eps, computed into x's memory in eager
# training, and a backward that reads y alone (bnorm_backward_from_output):
# autograd keeps y and the per-channel statistics, never x.

_IABN_ACTIVATIONS = ("leaky_relu", "elu", "identity")


def _iabn_scale(weight: Optional[Tensor], c: int, eps: float, pdtype: torch.dtype,
                like: Tensor) -> Tensor:
    """The forward's scale |weight| + eps (1 without weight), in pdtype."""
    if weight is None:
        return torch.ones(c, dtype=pdtype, device=like.device)
    return weight.detach().to(pdtype).abs() + eps


def _iabn_activate(y: Tensor, activation: str, param: float) -> None:
    if activation == "leaky_relu":
        torch.nn.functional.leaky_relu_(y, param)
    elif activation == "elu":
        torch.nn.functional.elu_(y, param)


def _iabn_train_impl(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor],
                     bias: Optional[Tensor], running_mean: Optional[Tensor],
                     running_var: Optional[Tensor], momentum: float, eps: float,
                     activation: str, param: float, into: Optional[Tensor] = None,
                     in_place_stats: bool = False):
    x, xs, axis = _input(x)
    pdtype = _param_dtype(x.dtype)
    y = _output_like(x) if into is None else into
    tracked, new_mean, new_var = _new_running(x, running_mean, running_var, in_place_stats)
    scale = _iabn_scale(weight, x.shape[1], eps, pdtype, x)
    _, mean, invstd = _bn.batch_norm_train(
        xs, _np(scale), _param(bias, pdtype), eps, axis=axis,
        running_mean=_np(new_mean) if tracked else None,
        running_var=_np(new_var) if tracked else None, momentum=momentum,
        out=_as_input(y, axis), residual=_residual_like(residual, x, axis))
    _iabn_activate(y, activation, param)
    return y, torch.from_numpy(mean), torch.from_numpy(invstd), new_mean, new_var


def _iabn_train_functional(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor],
                           bias: Optional[Tensor], running_mean: Optional[Tensor],
                           running_var: Optional[Tensor], momentum: float, eps: float,
                           activation: str,
                           param: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _iabn_train_impl(x, residual, weight, bias, running_mean, running_var, momentum,
                            eps, activation, param)


_iabn_train_op = torch.library.custom_op("bnorm::inplace_abn_train", _iabn_train_functional,
                                         mutates_args=(), device_types="cpu")


@_iabn_train_op.register_fake
def _(x, residual, weight, bias, running_mean, running_var, momentum, eps, activation, param):
    return _train_fake(x, running_mean, running_var)


def _iabn_infer_impl(x: Tensor, residual: Optional[Tensor], running_mean: Tensor,
                     running_var: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                     eps: float, activation: str, param: float,
                     into: Optional[Tensor] = None) -> Tensor:
    x, xs, axis = _input(x)
    pdtype = _param_dtype(x.dtype)
    y = _output_like(x) if into is None else into
    scale = _iabn_scale(weight, x.shape[1], eps, pdtype, x)
    _bn.batch_norm(xs, _param(running_mean, pdtype), _param(running_var, pdtype),
                   _np(scale), _param(bias, pdtype), eps=eps, axis=axis,
                   out=_as_input(y, axis), residual=_residual_like(residual, x, axis))
    _iabn_activate(y, activation, param)
    return y


def _iabn_infer_functional(x: Tensor, residual: Optional[Tensor], running_mean: Tensor,
                           running_var: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                           eps: float, activation: str, param: float) -> Tensor:
    return _iabn_infer_impl(x, residual, running_mean, running_var, weight, bias, eps,
                            activation, param)


_iabn_infer_op = torch.library.custom_op("bnorm::inplace_abn_infer", _iabn_infer_functional,
                                         mutates_args=(), device_types="cpu")


@_iabn_infer_op.register_fake
def _(x, residual, running_mean, running_var, weight, bias, eps, activation, param):
    return _output_like(x)


def _from_output_impl(dy: Tensor, y: Tensor, residual: Optional[Tensor], invstd: Tensor,
                      scale: Tensor, bias: Optional[Tensor], training: bool, activation: str,
                      param: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    y, ys, axis = _input(y)
    pdtype = _param_dtype(y.dtype)
    dx = _output_like(y)
    dres = _output_like(y) if residual is not None else y.new_empty((0,))
    dys = _as_input(_laid_out_like(_plain(dy), y), axis)
    _, dscale, db, *_ = _bn.batch_norm_backward_from_output(
        dys, ys, _param(invstd, pdtype), _param(scale, pdtype),
        _param(bias, pdtype), axis=axis, activation=activation, activation_param=param,
        training=training, residual=_residual_like(residual, y, axis),
        out=_as_input(dx, axis),
        _dresidual_out=_as_input(dres, axis) if residual is not None else None)
    return dx, torch.from_numpy(dscale), torch.from_numpy(db), dres


_from_output_op = torch.library.custom_op("bnorm::batch_norm_backward_from_output",
                                          _from_output_impl, mutates_args=(),
                                          device_types="cpu")


@_from_output_op.register_fake
def _(dy, y, residual, invstd, scale, bias, training, activation, param):
    pdtype = _param_dtype(y.dtype)
    c = y.shape[1]
    return (_output_like(y), y.new_empty((c,), dtype=pdtype), y.new_empty((c,), dtype=pdtype),
            _output_like(y) if residual is not None else y.new_empty((0,)))


def _iabn_save(ctx, y, residual, weight, bias, invstd, eps, activation, param, training):
    """y, the statistics and parameters (and the residual, which the network
    holds anyway: the input of the block); never x."""
    ctx.param_dtypes = (None if weight is None else weight.dtype,
                        None if bias is None else bias.dtype)
    ctx.iabn = (float(eps), activation, float(param), training)
    ctx.save_for_backward(y, residual, weight, bias, invstd)


def _iabn_backward(ctx, grad_y, backward, ir, iw, ib):
    """(dx, dresidual, dweight, dbias) for the inputs x, residual (at ir),
    weight (iw) and bias (ib): dweight is the scale's gradient times
    sign(weight) (the derivative of |weight|, 0 at 0)."""
    y, residual, weight, bias, invstd = ctx.saved_tensors
    eps, activation, param, training = ctx.iabn
    pdtype = _param_dtype(y.dtype)
    scale = _iabn_scale(weight, y.shape[1], eps, pdtype, y)
    dx, dscale, db, dres = backward(grad_y, y, residual, invstd, scale, bias, training,
                                    activation, param)
    dw = None if weight is None else dscale * torch.sign(weight.detach().to(pdtype))
    need = ctx.needs_input_grad
    w_dtype, b_dtype = ctx.param_dtypes
    return (dx if need[0] else None,
            dres if residual is not None and need[ir] else None,
            dw.to(w_dtype) if dw is not None and need[iw] else None,
            db.to(b_dtype) if b_dtype is not None and need[ib] else None)


def _iabn_train_setup(ctx, inputs, output):
    x, residual, weight, bias, _, _, _, eps, activation, param = inputs
    y, mean, invstd, new_mean, new_var = output
    ctx.mark_non_differentiable(mean, invstd, new_mean, new_var)
    _iabn_save(ctx, y, residual, weight, bias, invstd, eps, activation, param, True)


def _iabn_train_backward(ctx, grad_y, *unused):
    gx, gr, gw, gb = _iabn_backward(ctx, grad_y,
                                    torch.ops.bnorm.batch_norm_backward_from_output, 1, 2, 3)
    return gx, gr, gw, gb, None, None, None, None, None, None


torch.library.register_autograd("bnorm::inplace_abn_train", _iabn_train_backward,
                                setup_context=_iabn_train_setup)


def _iabn_frozen_invstd(x, running_var, eps):
    return torch.rsqrt(running_var.detach().to(torch.float64) + eps).to(_param_dtype(x.dtype))


def _iabn_infer_setup(ctx, inputs, output):
    x, residual, _, running_var, weight, bias, eps, activation, param = inputs
    _iabn_save(ctx, output, residual, weight, bias, _iabn_frozen_invstd(x, running_var, eps),
               eps, activation, param, False)


def _iabn_infer_backward(ctx, grad_y):
    gx, gr, gw, gb = _iabn_backward(ctx, grad_y,
                                    torch.ops.bnorm.batch_norm_backward_from_output, 1, 4, 5)
    return gx, gr, None, None, gw, gb, None, None, None


torch.library.register_autograd("bnorm::inplace_abn_infer", _iabn_infer_backward,
                                setup_context=_iabn_infer_setup)


class _InPlaceABNFunction(torch.autograd.Function):
    """Eager training and eval with gradients: the output written over the
    input (marked dirty), the running statistics updated in place."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, running_mean, running_var, training, momentum,
                eps, activation, param, inplace):
        # in place where bnorm reads x's layout (a pending negation leaves it as is)
        into = x if inplace and _arrays(_plain(x)) is not None else None
        if training:
            y, _, invstd, _, _ = _iabn_train_impl(x, residual, weight, bias, running_mean,
                                                  running_var, momentum, eps, activation, param,
                                                  into=into, in_place_stats=True)
        else:
            y = _iabn_infer_impl(x, residual, running_mean, running_var, weight, bias, eps,
                                 activation, param, into=into)
            invstd = _iabn_frozen_invstd(x, running_var, eps)
        if y is x:
            ctx.mark_dirty(x)
        _iabn_save(ctx, y, residual, weight, bias, invstd, eps, activation, param, training)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        gx, gr, gw, gb = _iabn_backward(ctx, grad_y, _from_output_impl, 1, 2, 3)
        return gx, gr, gw, gb, None, None, None, None, None, None, None, None


class InPlaceABN(torch.nn.Module):
    """In-Place Activated Batch Norm (Rota Bulo, Porzi and Kontschieder, CVPR
    2018), with the API of the ``inplace_abn`` package:

        y = act((x - mean) / sqrt(var + eps) * (|weight| + eps) + bias)

    act "leaky_relu" (slope ``activation_param``), "elu" (alpha
    ``activation_param``) or "identity". The scale is ``|weight| + eps``, not
    ``weight``, so that it is never 0 and the activation and the affine step
    can be inverted: the backward recovers the normalized input from y
    (``bnorm_backward_from_output``), and autograd keeps only y and the
    per-channel statistics, not x -- the memory the paper saves. Gradients
    of ``weight`` are those of ``|weight| + eps`` (0 where weight is 0).

    In eager mode the output is written over the input (``inplace=True``, the
    default): x must not be used after this module (a residual connection
    that reads it needs ``inplace=False``); autograd refuses a backward
    through an op that saved x. Under ``torch.compile`` the op is
    functional. Training updates ``running_mean`` and ``running_var`` (the
    unbiased variance) with ``momentum``. Parameters and buffers have
    BatchNorm's names, ``num_batches_tracked`` included, so a BatchNorm2d
    checkpoint loads (its weight then means |weight| + eps). CPU tensors of
    float32, float64, float16 and bfloat16 (float32 parameters for the half
    types)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, activation: str = "leaky_relu",
                 activation_param: float = 0.01, *, inplace: bool = True, device=None,
                 dtype=None):
        super().__init__()
        if activation not in _IABN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {_IABN_ACTIVATIONS}, got "
                             f"{activation!r}")
        if activation != "identity" and not float(activation_param) > 0:
            raise ValueError("activation_param must be > 0 (the activation must be "
                             f"invertible), got {activation_param!r}")
        if not float(eps) > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if momentum is None or not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        kw = dict(device=device, dtype=dtype)
        self.num_features = int(num_features)
        self.eps, self.momentum, self.affine = float(eps), float(momentum), bool(affine)
        self.activation, self.activation_param = activation, float(activation_param)
        self.inplace = bool(inplace)
        if affine:
            self.weight = torch.nn.Parameter(torch.ones(num_features, **kw))
            self.bias = torch.nn.Parameter(torch.zeros(num_features, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features, **kw))
        self.register_buffer("running_var", torch.ones(num_features, **kw))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, activation={self.activation!r}, "
                f"activation_param={self.activation_param}, inplace={self.inplace}")

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """act(BN(x)), or act(BN(x) + residual): a residual of x's shape and
        dtype added before the activation (the backward reads it, so a
        network gives the tensor it keeps anyway, e.g. a block's input)."""
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"InPlaceABN({self.num_features}): expected an input of at least "
                             f"2 dimensions with {self.num_features} channels, got shape "
                             f"{tuple(x.shape)}")
        if not _supported(x, self.running_mean, self.running_var, self.weight, self.bias):
            raise TypeError(f"bnorm.torch.InPlaceABN: CPU tensors of float32, float64, float16 "
                            f"or bfloat16 with float32 (float64) parameters, got {x.dtype} on "
                            f"{x.device}")
        if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype
                                     or residual.device != x.device):
            raise ValueError(f"InPlaceABN: the residual must have the input's shape, dtype and "
                             f"device ({tuple(x.shape)}, {x.dtype}), got "
                             f"{tuple(residual.shape)}, {residual.dtype}")
        if self.training:
            self.num_batches_tracked.add_(1)
        args = (self.weight, self.bias, self.running_mean, self.running_var)
        if _compiling():
            if self.training:
                y, _, _, new_mean, new_var = torch.ops.bnorm.inplace_abn_train(
                    x, residual, *args, self.momentum, self.eps, self.activation,
                    self.activation_param)
                with torch.no_grad():
                    self.running_mean.copy_(new_mean)
                    self.running_var.copy_(new_var)
                return y
            return torch.ops.bnorm.inplace_abn_infer(
                x, residual, self.running_mean, self.running_var, self.weight, self.bias,
                self.eps, self.activation, self.activation_param)
        return _InPlaceABNFunction.apply(x, residual, *args, self.training, self.momentum,
                                         self.eps, self.activation, self.activation_param,
                                         self.inplace)


def convert_inplace_abn(model: torch.nn.Module) -> torch.nn.Module:
    """A model in which every BatchNorm2d is an InPlaceABN: with the
    LeakyReLU (or ELU) that follows it folded in, and a residual addition
    between the two (a ResNet block's end); else with activation "identity";
    in place where the batch norm is its input's only use.
    Parameters, buffers and state_dict keys are the original's (the same
    tensors); the function differs where a weight is not |weight| + eps. See
    ``bnorm._fuse`` for how the model is traced."""
    from . import _fuse
    return _fuse.convert_inplace_abn(model)


# ---- synchronized batch norm on CPU tensors (torch.distributed, e.g. gloo) ----------

def _gather(t: Tensor, group) -> list:
    """Every rank's t (float64, same shape), in rank order: one collective."""
    import torch.distributed as dist
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t, group=group)
    return parts


class _SyncFunction(torch.autograd.Function):
    """Batch norm of a batch split over the ranks of a process group: one
    all_gather of (count, mean, m2) per channel in the forward, one of
    (sum_dy, sum_dy_xmu) in the backward, merged in rank order, so every
    rank holds bitwise the same statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, group):
        from . import distributed as _dist
        x, xn, axis = _input(x.detach())
        pdtype = _param_dtype(x.dtype)
        count, mean, m2 = _dist.moments(xn, axis=axis)
        c = mean.shape[0]
        local = torch.from_numpy(np.concatenate(([float(count)], mean, m2)))
        rows = torch.stack(_gather(local, group)).numpy()
        total, gmean, gm2 = _dist.merge_moments(rows[:, 0].astype(np.int64),
                                                rows[:, 1:1 + c], rows[:, 1 + c:])
        y = _output_like(x)
        _, save_mean, save_invstd = _dist.normalize(
            xn, total, gmean, gm2, _param(weight, pdtype), _param(bias, pdtype), eps,
            axis=axis, running_mean=_np(running_mean), running_var=_np(running_var),
            momentum=momentum, out=_as_input(y, axis))
        ctx.group, ctx.count = group, total
        _save(ctx, x, weight, bias, torch.from_numpy(save_mean), torch.from_numpy(save_invstd))
        return y

    @staticmethod
    def backward(ctx, grad_y):
        from . import distributed as _dist
        x, weight, mean, invstd = ctx.saved_tensors
        pdtype = _param_dtype(x.dtype)
        xs, axis = _arrays(x)  # (saved dense by the forward)
        gs = _as_input(_laid_out_like(grad_y, x), axis)
        sum_dy, sum_dy_xmu = _dist.backward_reduce(gs, xs, _np(mean), axis=axis)
        sums = torch.stack(_gather(torch.from_numpy(np.concatenate((sum_dy, sum_dy_xmu))),
                                   ctx.group))
        total = sums[0].clone()
        for r in range(1, sums.shape[0]):  # added in rank order: the same bits everywhere
            total += sums[r]
        c = sum_dy.shape[0]
        dx = _output_like(x)
        _dist.backward_elementwise(gs, xs, _np(mean), _np(invstd),
                                   _param(weight, pdtype), total[:c].numpy(),
                                   total[c:].numpy(), ctx.count, axis=axis,
                                   out=_as_input(dx, axis))
        # weight and bias: this rank's share (the data-parallel wrapper adds
        # or averages them over the ranks, as for every other parameter)
        dw = torch.from_numpy(sum_dy_xmu * invstd.double().numpy())
        db = torch.from_numpy(sum_dy)
        return (*_grads(ctx, dx, dw, db, 1, 2), None, None, None, None, None)


class SyncBatchNorm(torch.nn.SyncBatchNorm):
    """``torch.nn.SyncBatchNorm`` (same constructor, state and ``state_dict``
    keys) that also runs on CPU tensors: in training, over an initialized
    ``torch.distributed`` process group of more than one rank (gloo), the
    batch norm of the whole batch split over the ranks (shards of any sizes,
    an empty one included), one collective per forward and one per backward;
    otherwise bnorm's local batch norm. CUDA tensors go to PyTorch's own."""

    def forward(self, input: Tensor) -> Tensor:
        if input.device.type != "cpu":
            return super().forward(input)
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        factor, bn_training, running_mean, running_var = _module_step(self)
        group = None
        if bn_training and self.training:
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():
                group = self.process_group or dist.group.WORLD
                if dist.get_world_size(group) < 2:
                    group = None
        supported = input.dtype in (torch.float32, torch.float64) and _supported(
            input, running_mean, running_var, self.weight, self.bias)
        if group is None or not supported:
            if group is not None:
                raise TypeError(f"bnorm.torch.SyncBatchNorm: {input.dtype} CPU tensors with "
                                "float32 or float64 parameters are supported")
            return batch_norm(input, running_mean, running_var, self.weight, self.bias,
                              bn_training, factor, self.eps)
        return _SyncFunction.apply(input, self.weight, self.bias, running_mean, running_var,
                                   float(factor), float(self.eps), group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Every ``BatchNorm1d/2d/3d`` in ``module`` (PyTorch's and bnorm's)
        replaced by this class with the same parameters and buffers, as
        ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does; returns the
        converted module."""
        out = module
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
                module, torch.nn.SyncBatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group)
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out


def convert_sync_batchnorm(module: torch.nn.Module, process_group=None) -> torch.nn.Module:
    """``SyncBatchNorm.convert_sync_batchnorm(module, process_group)``."""
    return SyncBatchNorm.convert_sync_batchnorm(module, process_group)


# DistributedDataParallel refuses every torch.nn.SyncBatchNorm in a CPU module
# ("SyncBatchNorm layers only work with GPU modules"), which is true of
# PyTorch's own. bnorm's works on CPU tensors, so the check is skipped for a
# module whose synchronized batch norms are all bnorm's (any other still
# meets PyTorch's check).
def _allow_bnorm_sync_batchnorm_in_cpu_ddp():
    ddp = getattr(torch.nn.parallel, "DistributedDataParallel", None)
    check = getattr(ddp, "_passing_sync_batchnorm_handle", None)
    if check is None or getattr(check, "_bnorm", False):
        return

    def _passing_sync_batchnorm_handle(self, module):
        if all(isinstance(m, SyncBatchNorm) for m in module.modules()
               if isinstance(m, torch.nn.SyncBatchNorm)):
            return None
        return check(self, module)

    _passing_sync_batchnorm_handle._bnorm = True
    ddp._passing_sync_batchnorm_handle = _passing_sync_batchnorm_handle


_allow_bnorm_sync_batchnorm_in_cpu_ddp()
