"""The argument specs of bnorm._spec against the C header they describe, and
the rules the bindings take from them."""

import os
import re

import numpy as np
import pytest

import bnorm
from bnorm import _core, _spec

f32 = np.float32


def _pointer_params(function):
    """[(const, base type, name)] of the pointer parameters of a function of
    bnorm.h, in order."""
    text = open(os.path.join(bnorm.get_include(), "bnorm", "bnorm.h")).read()
    m = re.search(r"BNORM_API\s+bnorm_status\s+" + function + r"\s*\(([^)]*)\)", text)
    assert m, function
    out = []
    for p in m.group(1).split(","):
        p = " ".join(p.split())
        if "*" in p:
            pm = re.fullmatch(r"(const )?(\w+) \*(\w+)", p)
            assert pm, p
            out.append((bool(pm.group(1)), pm.group(2), pm.group(3)))
    return out


@pytest.mark.parametrize("spec", _spec.ALL, ids=lambda s: s.function)
def test_spec_lists_the_arrays_of_its_c_function_in_order(spec):
    params = _pointer_params(spec.function)
    assert len(params) == len(spec.args), [p[2] for p in params]
    for (const, base, cname), arg in zip(params, spec.args):
        assert const == (arg.access == "in"), (cname, arg)
        assert (base == "double") == (arg.kind == "sums"), (cname, arg)
        assert base in ("void", "double"), (cname, base)


def test_pack_orders_by_the_spec_and_refuses_unknown_names():
    a = _spec.MOMENTS.pack(dict(m2="b", x="a"))
    assert a == ("a", None, "b")
    with pytest.raises(KeyError, match="no argument"):
        _spec.MOMENTS.pack(dict(x=1, varr=2))


def test_binding_checks_form_by_the_spec():
    x = np.zeros((4, 3, 5), f32).reshape(-1)
    c = np.ones(3, f32)
    ok = dict(x=x, out=np.empty_like(x), running_mean=c, running_var=c)
    _core.forward_inference(_spec.INFERENCE.pack(ok), 4, 3, 5, 1e-5)
    with pytest.raises(TypeError, match="7 arrays expected, got 2"):
        _core.forward_inference((x, x), 4, 3, 5, 1e-5)
    with pytest.raises(ValueError, match="running_var is required"):
        _core.forward_inference(_spec.INFERENCE.pack(dict(ok, running_var=None)), 4, 3, 5,
                                1e-5)
    ro = c.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="save_mean is read-only"):
        _core.forward_training(_spec.TRAINING.pack(dict(x=x, out=np.empty_like(x),
                                                        save_mean=ro)), 4, 3, 5, 1e-5, 0.1)
    with pytest.raises(TypeError, match="weight has dtype float64, expected float32"):
        _core.forward_inference(_spec.INFERENCE.pack(dict(ok, weight=c.astype(np.float64))),
                                4, 3, 5, 1e-5)
    with pytest.raises(ValueError, match="mean has 2 elements, expected 3"):
        _core.moments((x, np.empty(2), np.empty(3)), 4, 3, 5)


def test_fast_path_declines_what_the_spec_refuses():
    """A form the rules refuse makes the fast path return None (it writes
    nothing), and the public function then raises the general path's error."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(f32)
    c = np.ones(3, f32)
    ro = np.zeros(3, f32)
    ro.flags.writeable = False
    assert _core.fast_training(x, None, None, 1e-5, 1, ro, c.copy(), 0.1, True) is None
    with pytest.raises(ValueError, match="running_mean is read-only"):
        bnorm.batch_norm_train(x, running_mean=ro, running_var=c.copy())
    assert _core.fast_inference(x, c, c, c.reshape(3, 1), None, 1e-5, 1) is None
    with pytest.raises(ValueError, match=r"weight has shape \(3, 1\), expected 3"):
        bnorm.batch_norm(x, c, c, c.reshape(3, 1))
    assert _core.fast_backward(x, x, c, c, None, 1, True, out=np.empty((2, 3, 5), f32)) is None


def _half_types():
    types = [np.float16]
    try:
        import ml_dtypes
        types.append(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return types


@pytest.mark.parametrize("dt", [np.float32, np.float64] + _half_types(),
                         ids=lambda d: np.dtype(d).name)
def test_fast_path_takes_every_data_dtype(dt):
    """Plain arrays of each data dtype with parameters of its parameter dtype
    take the fast path (a small half-precision call costs what a float32 one
    does), with the general path's bits."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5)).astype(dt)
    dy = rng.standard_normal((4, 3, 5)).astype(dt)
    pt = np.float64 if dt is np.float64 else np.float32
    w, b = rng.standard_normal(3).astype(pt), rng.standard_normal(3).astype(pt)
    rm, rv = np.zeros(3, pt), np.ones(3, pt)
    fast = _core.fast_training(x, w, b, 1e-5, 1, rm.copy(), rv.copy(), 0.1, True)
    assert fast is not None
    general = bnorm.batch_norm_train(x, list(w), b, axis=1, running_mean=rm.copy(),
                                     running_var=rv.copy())
    for a, c in zip(fast, general):
        assert a.dtype == c.dtype and a.tobytes() == c.tobytes()
    yi = _core.fast_inference(x, rm, rv, w, b, 1e-5, 1)
    assert yi is not None and yi.dtype == x.dtype
    assert yi.tobytes() == bnorm.batch_norm(x, rm, rv, list(w), b).tobytes()
    _, sm, si = fast
    back = _core.fast_backward(dy, x, sm, si, w, 1, True)
    assert back is not None
    for a, c in zip(back, bnorm.batch_norm_backward(dy, x, sm, si, list(w))):
        assert a.dtype == c.dtype and a.tobytes() == c.tobytes()
    # parameters of the data's own half dtype are the general path's to cast
    if dt not in (np.float32, np.float64):
        assert _core.fast_inference(x, rm.astype(dt), rv, w, b, 1e-5, 1) is None
