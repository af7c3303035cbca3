"""Batch normalization in plain NumPy, written from the paper.

Ioffe & Szegedy (2015), Algorithm 1 (the transform over a mini-batch), the
inference transform of Algorithm 2, and the backward pass by the chain rule
as the paper derives it -- with the corrected last term of dl/dx_i, which
is dl/dmu_B * 1/m (the seed page prints dl/dsigma^2_B * 1/m there).

Everything is computed in float64 and the results are cast to the input's
dtype, so this module is the yardstick the fast core is tested against. It
has the same signatures as the public functions (without ``out=``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["batch_norm", "batch_norm_train", "batch_norm_backward",
           "batch_norm_backward_from_output"]


def _layout(x, axis):
    """Axes of the mini-batch (all but the channel axis) and a function that
    shapes a per-channel vector to broadcast against x."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions, got shape {x.shape}")
    axis = axis % x.ndim
    batch_axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]

    def per_channel(v, default):
        if v is None:
            return np.full(shape, default, dtype=np.float64)
        return np.asarray(v, dtype=np.float64).reshape(shape)

    return x, batch_axes, per_channel


def batch_norm_train(x, weight=None, bias=None, eps=1e-5, *, axis=1,
                     running_mean=None, running_var=None, momentum=0.1,
                     unbiased=True):
    """Algorithm 1. Returns (y, mean, invstd); updates running statistics."""
    x, batch_axes, per_channel = _layout(x, axis)
    x64 = x.astype(np.float64)
    m = x64.size // x.shape[axis]
    gamma = per_channel(weight, 1.0)
    beta = per_channel(bias, 0.0)

    mu = x64.mean(axis=batch_axes, keepdims=True)                 # mini-batch mean
    var = ((x64 - mu) ** 2).mean(axis=batch_axes, keepdims=True)  # mini-batch variance
    xhat = (x64 - mu) / np.sqrt(var + eps)                        # normalize
    y = gamma * xhat + beta                                       # scale and shift

    if running_mean is not None:
        batch_var = var * m / (m - 1) if unbiased else var
        running_mean[...] = ((1 - momentum) * running_mean.astype(np.float64)
                             + momentum * mu.ravel())
        running_var[...] = ((1 - momentum) * running_var.astype(np.float64)
                            + momentum * batch_var.ravel())
    invstd = 1.0 / np.sqrt(var + eps)
    return (y.astype(x.dtype), mu.ravel().astype(x.dtype),
            invstd.ravel().astype(x.dtype))


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5, *, axis=1):
    """Algorithm 1 in training, Algorithm 2's inference transform otherwise:
    y = gamma / sqrt(Var[x] + eps) * x + (beta - gamma * E[x] / sqrt(Var[x] + eps))."""
    if training:
        return batch_norm_train(x, weight, bias, eps, axis=axis,
                                running_mean=running_mean,
                                running_var=running_var, momentum=momentum)[0]
    x, _, per_channel = _layout(x, axis)
    gamma = per_channel(weight, 1.0)
    beta = per_channel(bias, 0.0)
    mean = per_channel(running_mean, 0.0)
    var = per_channel(running_var, 1.0)
    y = gamma * (x.astype(np.float64) - mean) / np.sqrt(var + eps) + beta
    return y.astype(x.dtype)


def batch_norm_backward(dy, x, save_mean, save_invstd, weight=None, *, axis=1,
                        training=True):
    """The paper's backward pass, term by term. Returns (dx, dgamma, dbeta)."""
    x, batch_axes, per_channel = _layout(x, axis)
    x64 = x.astype(np.float64)
    g = np.asarray(dy, dtype=np.float64)
    m = x64.size // x.shape[axis]
    gamma = per_channel(weight, 1.0)
    mu = per_channel(save_mean, 0.0)
    invstd = per_channel(save_invstd, 1.0)
    var_eps = 1.0 / invstd ** 2                                   # sigma_B^2 + eps
    xhat = (x64 - mu) * invstd

    dxhat = g * gamma
    dgamma = (g * xhat).sum(axis=batch_axes)
    dbeta = g.sum(axis=batch_axes)
    if not training:
        # Frozen statistics: mu and sigma are constants, y is affine in x.
        dx = dxhat / np.sqrt(var_eps)
    else:
        dvar = (dxhat * (x64 - mu)).sum(axis=batch_axes, keepdims=True) \
            * -0.5 * var_eps ** -1.5
        dmu = (dxhat * -1.0 / np.sqrt(var_eps)).sum(axis=batch_axes, keepdims=True) \
            + dvar * (-2.0 * (x64 - mu)).sum(axis=batch_axes, keepdims=True) / m
        dx = dxhat / np.sqrt(var_eps) + dvar * 2.0 * (x64 - mu) / m + dmu / m
    return dx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def batch_norm_backward_from_output(dy, y, save_invstd, weight=None, bias=None, *, axis=1,
                                    activation="leaky_relu", activation_param=0.01,
                                    training=True, residual=None):
    """In-Place ABN's backward (Rota Bulo et al. 2018, section 3.2): x̂ from
    y through the inverse activation (less the residual added before it, if
    any), then the backward above written in x̂. Returns (dx, dgamma, dbeta),
    and dresidual with a residual."""
    y, batch_axes, per_channel = _layout(y, axis)
    y64 = y.astype(np.float64)
    g = np.asarray(dy, dtype=np.float64)
    m = y64.size // y.shape[axis]
    a = float(activation_param)
    if activation == "leaky_relu":
        z = np.where(y64 > 0, y64, y64 / a)
        g = np.where(y64 > 0, g, g * a)
    elif activation == "elu":
        z = np.where(y64 > 0, y64, np.log1p(np.where(y64 > 0, 0.0, y64) / a))
        g = np.where(y64 > 0, g, g * (y64 + a))
    elif activation == "identity":
        z = y64
    else:
        raise ValueError(f"unknown activation {activation!r}")
    gamma = per_channel(weight, 1.0)
    beta = per_channel(bias, 0.0)
    invstd = per_channel(save_invstd, 1.0)
    if residual is not None:
        z = z - np.asarray(residual, dtype=np.float64)
    xhat = (z - beta) / gamma
    dbeta = g.sum(axis=batch_axes)
    dgamma = (g * xhat).sum(axis=batch_axes)
    if training:
        dx = gamma * invstd * (g - dbeta.reshape(gamma.shape) / m
                               - xhat * dgamma.reshape(gamma.shape) / m)
    else:
        dx = gamma * invstd * g
    if residual is not None:
        return (dx.astype(y.dtype), dgamma.astype(y.dtype), dbeta.astype(y.dtype),
                g.astype(y.dtype))
    return dx.astype(y.dtype), dgamma.astype(y.dtype), dbeta.astype(y.dtype)
