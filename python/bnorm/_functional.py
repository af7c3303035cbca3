"""The public functions: argument checks and shaping, then one call into
``bnorm._core``. Every tensor is viewed as [outer, C, inner]
(the layout of ``bnorm.h``)."""

from __future__ import annotations

import math
import operator
from typing import Any, Optional, Tuple

import numpy as np

from . import _core, _spec

__all__ = ["batch_norm", "batch_norm_train", "batch_norm_backward",
           "batch_norm_backward_from_output"]

_DATA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # and the half types:
_HALF = np.dtype(np.float16)


def _is_bfloat16(dt: np.dtype) -> bool:
    """ml_dtypes' bfloat16 (NumPy has none), recognised without importing it."""
    return dt.name == "bfloat16" and dt.itemsize == 2


def _is_data_dtype(dt: np.dtype) -> bool:
    t = dt.type  # (compared by identity: a dtype's == costs a conversion)
    return (t is np.float32 or t is np.float64 or t is np.float16 or _is_bfloat16(dt)) \
        and dt.isnative


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _param_dtype(dt: np.dtype) -> np.dtype:
    """Parameters and statistics: float64 for float64 data, else float32."""
    return _F64 if dt.type is np.float64 else _F32


class _View:
    """x seen as a C-contiguous [outer, C, inner] block of memory.

    ``flat`` is a C-contiguous array holding x's values, in x's own memory
    when x is contiguous (NCHW-like) or channels-last along ``axis``
    (NHWC-like), else a copy. ``like(flat_out)`` turns a result laid out like
    ``flat`` back into an array of x's shape.
    """

    __slots__ = ("flat", "outer", "channels", "inner", "channels_last", "axis")

    def __init__(self, x: np.ndarray, axis: int, allow_channels_last: bool):
        ndim = x.ndim
        shape = x.shape
        self.axis = axis
        self.channels = shape[axis]
        self.channels_last = False
        contiguous = x.flags.c_contiguous
        if not contiguous and allow_channels_last and axis != ndim - 1:
            moved = np.moveaxis(x, axis, -1)
            if moved.flags.c_contiguous:
                self.channels_last = True
                self.flat = moved
                self.outer = math.prod(shape[:axis] + shape[axis + 1:])
                self.inner = 1
                return
        self.flat = x if contiguous else np.ascontiguousarray(x)
        self.outer = math.prod(shape[:axis])
        self.inner = math.prod(shape[axis + 1:])

    def empty(self) -> np.ndarray:
        return np.empty_like(self.flat)

    def like(self, flat_out: np.ndarray) -> np.ndarray:
        if self.channels_last:
            return np.moveaxis(flat_out, -1, self.axis)
        return flat_out


def _array(a: Any, name: str) -> np.ndarray:
    """A NumPy view of an array argument: NumPy arrays as they are, any
    object with ``__dlpack__`` (a CPU tensor of PyTorch, JAX, CuPy-on-host,
    ...) through DLPack without a copy, anything else through
    ``numpy.asarray``."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__dlpack__"):
        from . import _dlpack
        try:
            if _dlpack.is_bfloat16(a):  # NumPy has no bfloat16: ml_dtypes's
                return _dlpack.bfloat16_from_dlpack(a)
            return np.from_dlpack(a)
        except ImportError:
            raise TypeError(f"{name}: bfloat16 tensors need ml_dtypes "
                            '(pip install "bnorm[half]")') from None
        except (BufferError, RuntimeError, TypeError, ValueError) as e:
            raise TypeError(f"{name}: cannot be read through DLPack ({e})") from None
    return np.asarray(a)


def _data(x: Any, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = _array(x, name)
    if not _is_data_dtype(x.dtype):
        if not x.dtype.isnative and _is_data_dtype(x.dtype.newbyteorder("=")):
            raise TypeError(
                f"{name} has dtype {x.dtype.str}, in non-native byte order: convert it "
                f"with {name}.astype({name}.dtype.newbyteorder('='))")
        raise TypeError(
            f"{name} has dtype {x.dtype}, expected float32, float64, float16 or bfloat16")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    return x


def _axis(axis: Any, ndim: int) -> int:
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    if not -ndim <= a < ndim:
        raise np.exceptions.AxisError(
            f"axis {a} is out of range for an input with {ndim} dimensions")
    return a % ndim


def _num_features(num_features: Any) -> int:
    """The channel count a layer or accumulator is made for."""
    try:
        n = operator.index(num_features)
    except TypeError:
        raise TypeError("num_features must be an integer, got "
                        f"{type(num_features).__name__}") from None
    if n < 1:
        raise ValueError(f"num_features must be >= 1, got {n}")
    return n


def _eps(eps: Any) -> float:
    try:
        if isinstance(eps, (str, bytes)):  # float("1e-5") would accept them
            raise TypeError
        e = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}") from None
    if not (math.isfinite(e) and e > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    return e


def _momentum(momentum: Any) -> float:
    try:
        if isinstance(momentum, (str, bytes)):
            raise TypeError
        m = float(momentum)
    except (TypeError, ValueError):
        raise TypeError(
            f"momentum must be a number in [0, 1], got {type(momentum).__name__}") from None
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    return m


def _real(a: np.ndarray, name: str) -> None:
    """Per-channel values must be real numbers (any float or integer type)."""
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} has dtype {a.dtype}, expected a real number type")


def _per_channel(a: np.ndarray, name: str, channels: Optional[int],
                 axis: Optional[int] = None) -> None:
    """A per-channel array must be 1-D with one element per channel (any
    length when channels is None). The one wording of this mistake, for
    every function of the package."""
    if a.ndim == 1 and (channels is None or a.shape[0] == channels):
        return
    what = f"{a.shape[0]} elements" if a.ndim == 1 else f"shape {a.shape}"
    expected = "one value per channel" if channels is None else f"{channels}"
    where = f" (channels on axis {axis})" if axis is not None else ""
    raise ValueError(f"{name} has {what}, expected {expected}{where}")


def _check_length(a: np.ndarray, name: str, view: _View) -> None:
    if a.ndim != 1 or a.shape[0] != view.channels:
        _per_channel(a, name, view.channels, view.axis)


def _param(p: Any, name: str, view: _View, dtype: np.dtype) -> Optional[np.ndarray]:
    """A per-channel input (weight, bias, statistics), cast to dtype."""
    if p is None:
        return None
    if (type(p) is np.ndarray and p.dtype is dtype and p.shape == (view.channels,)
            and p.flags.c_contiguous):
        return p  # already as the call needs it
    a = _array(p, name)
    _real(a, name)
    _check_length(a, name, view)
    return np.ascontiguousarray(a, dtype=dtype)


def _channel_args(spec: _spec.Spec, values: dict, view: _View, dtype: np.dtype) -> dict:
    """The per-channel arrays of a call, by its spec: each input in values
    checked and cast (``_param``), each output allocated. The running
    statistics (updated in place) are ``_running_pair``'s."""
    roles = spec.roles
    for name in roles.get(("channel", "in"), ()):
        values[name] = _param(values.get(name), name, view, dtype)
    c = view.channels
    for name in roles.get(("channel", "out"), ()):
        values[name] = np.empty(c, dtype)
    for name in roles.get(("sums", "out"), ()):
        values[name] = np.empty(c, np.float64)
    return values


def _running(p: Any, name: str, view: _View, dtype: np.dtype) -> np.ndarray:
    """A running statistic updated in place: never a silent copy."""
    if not isinstance(p, np.ndarray) and hasattr(p, "__dlpack__"):
        p = _array(p, name)  # a view of the tensor's memory
    if not isinstance(p, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray (it is updated in place), "
            f"got {type(p).__name__}")
    if p.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {p.dtype}, expected {dtype} (statistics have "
            f"the dtype of the data)")
    _check_length(p, name, view)
    if not p.flags.c_contiguous:
        raise ValueError(f"{name} must be contiguous (it is updated in place)")
    if not p.flags.writeable:
        raise ValueError(f"{name} is read-only (it is updated in place)")
    return p


def _running_pair(running_mean: Any, running_var: Any, momentum: Any, view: _View,
                  pdtype: np.dtype):
    """The running statistics of a training call, both or neither, and the
    momentum to update them with (0 when there are none)."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if running_mean is None:
        return None, None, 0.0
    momentum = _momentum(momentum)
    running_mean = _running(running_mean, "running_mean", view, pdtype)
    running_var = _running(running_var, "running_var", view, pdtype)
    if np.may_share_memory(running_mean, running_var):
        raise ValueError("running_mean and running_var share memory")
    return running_mean, running_var, momentum


def _out(out: Any, x: np.ndarray, view: _View) -> np.ndarray:
    """The output buffer: preallocated `out`, else a new array laid out like x."""
    if out is None:
        return view.empty()
    if not isinstance(out, np.ndarray) and hasattr(out, "__dlpack__"):
        out = _array(out, "out")
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"out has shape {out.shape}, expected {x.shape}")
    if out.dtype != x.dtype:
        raise ValueError(f"out has dtype {out.dtype}, expected {x.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"out is read-only")
    if not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous")
    # In place (the same memory as the flattened input) is fine; any other
    # overlap would read values already overwritten.
    flat = view.flat
    same = (out.__array_interface__["data"][0] == flat.__array_interface__["data"][0])
    if not same and np.may_share_memory(out, flat):
        raise ValueError(f"out partially overlaps the input")
    return out


def _prepare(x: Any, axis: Any, out: Any, name: str = "x"):
    x = _data(x, name)
    a = _axis(axis, x.ndim)
    view = _View(x, a, allow_channels_last=out is None)
    pdtype = _param_dtype(x.dtype)  # parameters and statistics
    return x, view, pdtype


def _check_training_size(x: np.ndarray, view: _View) -> None:
    if x.size == 0:
        raise ValueError(
            f"cannot train on an empty input: got input shape {x.shape}")
    if view.outer * view.inner <= 1:
        raise ValueError(
            "Expected more than 1 value per channel when training, "
            f"got input shape {x.shape}")


def batch_norm_train(x, weight=None, bias=None, eps=1e-5, *, axis=1,
                     running_mean=None, running_var=None, momentum=0.1,
                     unbiased=True, out=None, activation=None,
                     residual=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training forward with batch statistics.

    Returns ``(y, save_mean, save_invstd)``; ``save_invstd`` is
    ``1/sqrt(var + eps)`` of the biased batch variance. When ``running_mean``
    and ``running_var`` are given they are updated in place:
    ``running = (1 - momentum) * running + momentum * batch``, with the
    unbiased batch variance (``unbiased=True``, PyTorch) or the biased one
    (``unbiased=False``, ONNX with ``momentum = 1 - onnx_momentum``).

    Fused epilogue, in the same pass: ``residual=z`` gives ``y = BN(x) + z``
    and ``activation="relu"`` then ``y = max(y, 0)``, or ``"relu6"``
    ``y = min(max(y, 0), 6)`` (the statistics are those of x alone).
    """
    act = _activation(activation)
    r = _core.fast_training(x, weight, bias, eps, axis, running_mean, running_var, momentum,
                            unbiased, out, residual, act)
    if r is not None:
        return r
    x, view, pdtype = _prepare(x, axis, out)
    view, z = _residual_view(residual, x, view, axis, out)
    eps = _eps(eps)
    running_mean, running_var, momentum = _running_pair(running_mean, running_var,
                                                        momentum, view, pdtype)
    a = _channel_args(_spec.TRAINING, dict(weight=weight, bias=bias), view, pdtype)
    _check_training_size(x, view)
    y = _out(out, x, view)
    a.update(x=view.flat, residual=z, out=y, running_mean=running_mean,
             running_var=running_var)
    _core.forward_training(_spec.TRAINING.pack(a), view.outer, view.channels, view.inner,
                           eps, momentum, bool(unbiased), act)
    return view.like(y), a["save_mean"], a["save_invstd"]


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5, *, axis=1, out=None,
               activation=None, residual=None) -> np.ndarray:
    """Batch normalization with PyTorch's ``torch.nn.functional.batch_norm``
    semantics. ``training=False`` normalizes with the running statistics
    (required); ``training=True`` with the batch statistics, updating the
    running statistics in place when they are given. ``residual=z`` and
    ``activation="relu"`` fuse ``y = max(BN(x) + z, 0)`` into the same pass
    (``"relu6"``: ``min(max(BN(x) + z, 0), 6)``)."""
    if training:
        y, _, _ = batch_norm_train(x, weight, bias, eps, axis=axis,
                                   running_mean=running_mean,
                                   running_var=running_var, momentum=momentum,
                                   out=out, activation=activation, residual=residual)
        return y
    act = _activation(activation)
    r = _core.fast_inference(x, running_mean, running_var, weight, bias, eps, axis, out,
                             residual, act)
    if r is not None:
        return r
    x, view, pdtype = _prepare(x, axis, out)
    view, z = _residual_view(residual, x, view, axis, out)
    eps = _eps(eps)
    if running_mean is None or running_var is None:
        raise ValueError(
            "running_mean and running_var are required when training=False")
    a = _channel_args(_spec.INFERENCE, dict(running_mean=running_mean, running_var=running_var,
                                            weight=weight, bias=bias), view, pdtype)
    y = _out(out, x, view)
    a.update(x=view.flat, residual=z, out=y)
    _core.forward_inference(_spec.INFERENCE.pack(a), view.outer, view.channels, view.inner,
                            eps, act)
    return view.like(y)


def _views(x: np.ndarray, axis: Any, out: Any, others):
    """x and the tensors ``others`` ([(array, name)], each checked by _data)
    seen in one common layout: channels-last when all of them are."""
    for t, name in others:
        if t.shape != x.shape:
            raise ValueError(f"{name} has shape {t.shape}, expected {x.shape} (the shape of x)")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, expected {x.dtype} (the dtype of x)")
    a = _axis(axis, x.ndim)
    vx = _View(x, a, allow_channels_last=out is None)
    vs = [_View(t, a, allow_channels_last=vx.channels_last) for t, _ in others]
    if any(v.channels_last != vx.channels_last for v in vs):  # one layout for all
        vx = _View(x, a, allow_channels_last=False)
        vs = [_View(t, a, allow_channels_last=False) for t, _ in others]
    return vx, vs


def _pair_views(dy: np.ndarray, x: np.ndarray, axis: Any, out: Any):
    """x and dy (already checked by _data) seen in one common layout."""
    vx, (vdy,) = _views(x, axis, out, [(dy, "dy")])
    return vx, vdy


def _activation(activation: Any) -> int:
    """The fused activation's flag (_core.FUSED_ACTIVATIONS), 0 for none."""
    if activation is None:
        return 0
    if isinstance(activation, str) and activation.lower() in _core.FUSED_ACTIVATIONS:
        return _core.FUSED_ACTIVATIONS[activation.lower()]
    raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")


def _residual_view(residual: Any, x: np.ndarray, view: "_View", axis: Any, out: Any):
    """(view of x, flat residual or None): the residual laid out as x is."""
    if residual is None:
        return view, None
    z = _data(residual, "residual")
    vx, (vz,) = _views(x, axis, out, [(z, "residual")])
    return vx, vz.flat


def batch_norm_backward(dy, x, save_mean, save_invstd, weight=None, *, axis=1,
                        training=True, activation=None, y=None, bias=None,
                        residual=False, out=None):
    """Gradients of batch normalization: ``(dx, dweight, dbias)``.

    ``save_mean`` and ``save_invstd`` come from :func:`batch_norm_train`.
    With ``training=False`` the statistics are constants (eval mode, frozen
    batch norm): pass the running mean and ``1/sqrt(running_var + eps)``;
    then ``dx = dy * weight * invstd``. ``out=`` receives dx.

    The backward of the fused forward, in one pass: ``activation="relu"``
    masks dy where the forward's ReLU was closed, read from ``y=`` (the
    forward's output; open where y > 0; ``"relu6"``: where 0 < y < 6) or,
    for BN + ReLU without a residual,
    recomputed from x, the saved statistics, weight and ``bias=`` (beta).
    ``residual=True`` also returns the residual input's gradient:
    ``(dx, dweight, dbias, dresidual)``.
    """
    # (the plain call first, with the least Python: the small-call latency)
    if activation is None and y is None and bias is None and residual is False:
        r = _core.fast_backward(dy, x, save_mean, save_invstd, weight, axis, training,
                                out)
        if r is not None:
            return r
    if not isinstance(residual, (bool, np.bool_)):
        raise TypeError(f"residual must be True or False, got {type(residual).__name__}")
    return _backward_fused(dy, x, save_mean, save_invstd, weight, axis, training,
                           activation, y, bias, residual, out)


def _backward_fused(dy, x, save_mean, save_invstd, weight, axis, training, activation, y,
                    bias, residual, out, dresidual_out=None):
    """batch_norm_backward's general path; ``dresidual_out`` (with
    residual=True): an array, laid out as x, that receives dresidual."""
    act = _activation(activation)
    if type(residual) is bool:
        r = _core.fast_backward(dy, x, save_mean, save_invstd, weight, axis, training, out, y,
                                bias, act, residual, dresidual_out)
        if r is not None:
            return r
    x = _data(x, "x")
    others = [(_data(dy, "dy"), "dy")]
    if y is not None:
        if not act:
            raise ValueError("y= is the activation's mask: pass it with activation='relu' "
                             "or 'relu6'")
        others.append((_data(y, "y"), "y"))
    if act and y is None and residual:
        raise ValueError("with residual=True the activation's mask cannot be recomputed "
                         "from x: pass y= (the forward's output)")
    vx, vs = _views(x, axis, out, others)
    vdy = vs[0]
    vy = vs[1].flat if y is not None else None
    pdtype = _param_dtype(x.dtype)
    if save_mean is None or save_invstd is None:
        raise ValueError("save_mean and save_invstd are required")
    a = _channel_args(_spec.BACKWARD, dict(save_mean=save_mean, save_invstd=save_invstd,
                                           weight=weight, bias=bias), vx, pdtype)
    frozen = not training
    if not frozen:
        _check_training_size(x, vx)
    dx = _out(out, x, vx)
    dres = None
    if residual:
        dres = vx.empty() if dresidual_out is None else _out(dresidual_out, x, vx)
    a.update(dy=vdy.flat, x=vx.flat, y=vy, out=dx, dresidual=dres)
    _core.backward(_spec.BACKWARD.pack(a), vx.outer, vx.channels, vx.inner, frozen, act)
    if residual:
        return vx.like(dx), a["dweight"], a["dbias"], vx.like(dres)
    return vx.like(dx), a["dweight"], a["dbias"]


def batch_norm_backward_from_output(dy, y, save_invstd, weight=None, bias=None, *, axis=1,
                                    activation="leaky_relu", activation_param=0.01,
                                    training=True, residual=None, out=None,
                                    _dresidual_out=None):
    """The backward of ``y = act(BN(x))`` from the output ``y`` alone (In-Place
    Activated Batch Norm): ``(dx, dweight, dbias)``, x not needed. With
    ``residual=r``, of ``y = act(BN(x) + r)``: ``(dx, dweight, dbias,
    dresidual)``.

    ``weight`` and ``bias`` are the forward's scale and shift (every scale
    nonzero: In-Place ABN uses ``|weight| + eps``), ``save_invstd`` its
    ``1/sqrt(var + eps)``; ``dweight`` is the gradient of that scale.
    ``activation``: "leaky_relu" (slope ``activation_param`` > 0), "elu"
    (alpha ``activation_param`` > 0) or "identity". ``training=False``: the
    statistics were constants (pass 1/sqrt(running_var + eps)). ``out=``
    receives dx and may be ``dy`` or ``y`` itself (in place).
    """
    if not isinstance(activation, str) or activation.lower() not in _core.ACTIVATIONS:
        raise ValueError("activation must be 'leaky_relu', 'elu' or 'identity', got "
                         f"{activation!r}")
    code = _core.ACTIVATIONS[activation.lower()]
    param = float(activation_param) if activation.lower() != "identity" else 0.0
    if activation.lower() != "identity" and not (math.isfinite(param) and param > 0):
        raise ValueError(f"activation_param must be finite and > 0, got {activation_param!r}")
    y = _data(y, "y")
    others = [(_data(dy, "dy"), "dy")]
    if residual is not None:
        others.append((_data(residual, "residual"), "residual"))
    vy, vs = _views(y, axis, out, others)
    vdy = vs[0]
    pdtype = _param_dtype(y.dtype)
    if save_invstd is None:
        raise ValueError("save_invstd is required")
    a = _channel_args(_spec.FROM_OUTPUT, dict(save_invstd=save_invstd, weight=weight,
                                              bias=bias), vy, pdtype)
    if training:
        _check_training_size(y, vy)
    dx = _out(out, y, vy)  # (may be y, or dy: in place)
    dres = None
    if residual is not None:
        dres = vy.empty() if _dresidual_out is None else _out(_dresidual_out, y, vy)
    a.update(dy=vdy.flat, y=vy.flat, residual=None if residual is None else vs[1].flat,
             out=dx, dresidual=dres)
    _core.backward_from_output(_spec.FROM_OUTPUT.pack(a), vy.outer, vy.channels, vy.inner,
                               not training, code, param)
    if residual is not None:
        return vy.like(dx), a["dweight"], a["dbias"], vy.like(dres)
    return vy.like(dx), a["dweight"], a["dbias"]
