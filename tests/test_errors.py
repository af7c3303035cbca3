"""Every error the Python API documents (README, "Python"): the exception
type, its message, and that no caller buffer was written."""
import os
import re

import numpy as np
import pytest

import bnorm
from bnorm import _core, _spec

f32 = np.float32


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((4, 3, 5)).astype(f32)


def stats(c=3, dtype=f32):
    return np.zeros(c, dtype), np.ones(c, dtype)


def test_one_value_per_channel_when_training():
    msg = r"^Expected more than 1 value per channel when training, got input shape \(1, 3\)$"
    with pytest.raises(ValueError, match=msg):
        bnorm.batch_norm(np.zeros((1, 3), f32), *stats(), training=True)
    with pytest.raises(ValueError, match=msg):
        bnorm.batch_norm_train(np.zeros((1, 3), f32))
    with pytest.raises(ValueError, match=r"got input shape \(1, 3, 1, 1\)"):
        bnorm.batch_norm_train(np.zeros((1, 3, 1, 1), f32))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        bnorm.batch_norm_backward(np.zeros((1, 3), f32), np.zeros((1, 3), f32),
                                  *stats())


def test_empty_training_input():
    for shape in [(0, 3), (4, 0), (2, 3, 0)]:
        with pytest.raises(ValueError, match="cannot train on an empty input"):
            bnorm.batch_norm_train(np.zeros(shape, f32))


def test_inference_needs_running_stats(x):
    with pytest.raises(ValueError, match="running_mean and running_var are required "
                                         "when training=False"):
        bnorm.batch_norm(x)
    with pytest.raises(ValueError, match="required when training=False"):
        bnorm.batch_norm(x, np.zeros(3, f32))


def test_per_channel_lengths(x):
    rm, rv = stats()
    with pytest.raises(ValueError, match=r"^running_mean has 2 elements, expected 3 "
                                         r"\(channels on axis 1\)$"):
        bnorm.batch_norm(x, np.zeros(2, f32), rv)
    with pytest.raises(ValueError, match=r"^weight has 4 elements, expected 5 "
                                         r"\(channels on axis 2\)$"):
        bnorm.batch_norm(x, *stats(5), weight=np.ones(4, f32), axis=-1)
    with pytest.raises(ValueError, match=r"^bias has shape \(3, 1\), expected 3"):
        bnorm.batch_norm_train(x, bias=np.ones((3, 1), f32))
    with pytest.raises(ValueError, match="running_var has 4 elements, expected 3"):
        bnorm.batch_norm_train(x, running_mean=rm, running_var=np.ones(4, f32))
    with pytest.raises(ValueError, match="save_invstd has 2 elements, expected 3"):
        bnorm.batch_norm_backward(x, x, rm, np.ones(2, f32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.longdouble, np.complex64,
                                   np.bool_, object])
def test_unsupported_data_dtype(x, dtype):
    xx = x.astype(dtype)
    with pytest.raises(TypeError,
                       match=r"^x has dtype .*, expected float32, float64, float16 or bfloat16$"):
        bnorm.batch_norm(xx, *stats())
    with pytest.raises(TypeError, match="expected float32, float64, float16 or bfloat16"):
        bnorm.batch_norm_train(xx)
    with pytest.raises(TypeError, match="dy has dtype"):
        bnorm.batch_norm_backward(xx, x, *stats())


def test_parameter_dtype_errors(x):
    with pytest.raises(TypeError, match="weight has dtype complex128, expected a real"):
        bnorm.batch_norm(x, *stats(), weight=np.ones(3, complex))
    with pytest.raises(TypeError, match="dy has dtype float64, expected float32"):
        bnorm.batch_norm_backward(x.astype(np.float64), x, *stats())


def test_running_stats_must_be_updatable_in_place(x):
    rm, rv = stats()
    with pytest.raises(TypeError, match=r"^running_mean has dtype float64, expected float32"):
        bnorm.batch_norm_train(x, running_mean=np.zeros(3), running_var=rv)
    with pytest.raises(TypeError, match="running_mean must be a numpy.ndarray .*got list"):
        bnorm.batch_norm_train(x, running_mean=[0, 0, 0], running_var=rv)
    ro = np.zeros(3, f32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="running_var is read-only"):
        bnorm.batch_norm_train(x, running_mean=rm, running_var=ro)
    strided = np.zeros(6, f32)[::2]
    with pytest.raises(ValueError, match="running_mean must be contiguous"):
        bnorm.batch_norm(x, strided, rv, training=True)
    with pytest.raises(ValueError, match="must be given together"):
        bnorm.batch_norm_train(x, running_mean=rm)
    with pytest.raises(ValueError, match="share memory"):
        bnorm.batch_norm_train(x, running_mean=rm, running_var=rm)
    assert rm.tolist() == [0, 0, 0] and rv.tolist() == [1, 1, 1]


def test_out_errors_leave_out_alone(x):
    rm, rv = stats()
    cases = [
        (np.zeros((4, 3, 6), f32), ValueError, r"^out has shape \(4, 3, 6\), expected \(4, 3, 5\)$"),
        (np.zeros((4, 3, 5), np.float64), ValueError, r"^out has dtype float64, expected float32$"),
        (np.zeros((4, 3, 10), f32)[:, :, ::2], ValueError, "out must be C-contiguous"),
        ([0.0] * 60, TypeError, "out must be a numpy.ndarray"),
    ]
    ro = np.zeros((4, 3, 5), f32)
    ro.flags.writeable = False
    cases.append((ro, ValueError, "out is read-only"))
    for out, exc, msg in cases:
        before = np.array(out, copy=True)
        with pytest.raises(exc, match=msg):
            bnorm.batch_norm(x, rm, rv, out=out)
        with pytest.raises(exc, match=msg):
            bnorm.batch_norm_train(x, out=out)
        np.testing.assert_array_equal(np.asarray(out), before)


def test_out_partially_overlapping_input():
    buf = np.arange(2 * 3 * 4 + 1, dtype=f32)
    x = buf[:-1].reshape(2, 3, 4)
    out = buf[1:].reshape(2, 3, 4)
    before = buf.copy()
    with pytest.raises(ValueError, match="out partially overlaps the input"):
        bnorm.batch_norm_train(x, out=out)
    np.testing.assert_array_equal(buf, before)


@pytest.mark.parametrize("eps", [0, -1e-5, float("nan"), float("inf")])
def test_bad_eps(x, eps):
    with pytest.raises(ValueError, match=r"^eps must be a finite number > 0, got"):
        bnorm.batch_norm(x, *stats(), eps=eps)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        bnorm.batch_norm_train(x, eps=eps)
    with pytest.raises(TypeError, match="eps must be a number"):
        bnorm.batch_norm_train(x, eps="small")


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_bad_momentum(x, momentum):
    rm, rv = stats()
    with pytest.raises(ValueError, match=r"^momentum must be in \[0, 1\], got"):
        bnorm.batch_norm(x, rm, rv, training=True, momentum=momentum)
    assert rm.tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match="momentum must be a number"):
        bnorm.batch_norm_train(x, running_mean=rm, running_var=rv, momentum=None)


def test_axis_errors(x):
    with pytest.raises(np.exceptions.AxisError,
                       match="axis 3 is out of range for an input with 3 dimensions"):
        bnorm.batch_norm_train(x, axis=3)
    with pytest.raises(ValueError, match="axis -4 is out of range"):
        bnorm.batch_norm(x, *stats(), axis=-4)
    with pytest.raises(TypeError, match="axis must be an integer, got float"):
        bnorm.batch_norm_train(x, axis=1.0)


@pytest.mark.parametrize("shape", [(), (5,)])
def test_rank_below_two(shape):
    with pytest.raises(ValueError, match=r"x must have at least 2 dimensions \(N, C, \.\.\.\), "
                                         r"got shape"):
        bnorm.batch_norm_train(np.zeros(shape, f32))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        bnorm.batch_norm(np.zeros(shape, f32), *stats(1))


def test_backward_shape_mismatch(x):
    with pytest.raises(ValueError, match=r"dy has shape \(4, 3, 4\), expected \(4, 3, 5\)"):
        bnorm.batch_norm_backward(x[:, :, :4], x, *stats())
    with pytest.raises(ValueError, match="save_mean and save_invstd are required"):
        bnorm.batch_norm_backward(x, x, None, None)


def test_thread_count_errors():
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        bnorm.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        bnorm.set_num_threads(1.5)


def test_c_status_codes_become_exceptions(x):
    """What only the C layer sees still arrives as a clear exception: here a
    dx partially overlapping dy, and an unknown dtype."""
    buf = np.zeros(61, f32)
    dy = buf[:60]
    dx = buf[1:]
    rm, rv = stats()
    with pytest.raises(_core.BnormValueError, match="buffers overlap") as e:
        _core.backward(_spec.BACKWARD.pack(dict(dy=dy, x=x.reshape(-1), save_mean=rm,
                                                save_invstd=rv, out=dx, dweight=np.empty(3, f32),
                                                dbias=np.empty(3, f32))), 4, 3, 5, False)
    assert e.value.status == 8
    assert isinstance(e.value, ValueError) and isinstance(e.value, bnorm.BnormError)
    with pytest.raises(TypeError, match="unsupported dtype"):
        _core.forward_inference((x.astype(np.int32), None, x, rm, rv, None, None), 4, 3, 5, 1e-5)
    with pytest.raises(ValueError, match="out has 59 elements, expected 60"):
        _core.forward_inference((x.reshape(-1), None, np.zeros(59, f32), rm, rv, None, None),
                                4, 3, 5, 1e-5)
    assert _core.status_string(0) == "success"
    assert "unknown" in _core.status_string(1234)


# -- the status-code table ---------------------------------------------------
def _header_codes():
    """The status codes bnorm.h defines: {name: value}."""
    import re
    text = open(os.path.join(bnorm.get_include(), "bnorm", "bnorm.h")).read()
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"#define BNORM_(ERROR_\w+)\s+(\d+)", text)}


# The exception class each code must raise (bnorm.h's meaning of the code).
EXPECTED_CLASS = {
    "ERROR_NULL_POINTER": "BnormValueError", "ERROR_INVALID_SIZE": "BnormValueError",
    "ERROR_UNSUPPORTED_DTYPE": "BnormTypeError", "ERROR_INVALID_EPS": "BnormValueError",
    "ERROR_INVALID_MOMENTUM": "BnormValueError", "ERROR_TOO_FEW_VALUES": "BnormValueError",
    "ERROR_INVALID_FLAGS": "BnormValueError", "ERROR_OVERLAP": "BnormValueError",
    "ERROR_OUT_OF_MEMORY": "BnormMemoryError", "ERROR_INVALID_ARGUMENT": "BnormValueError",
    "ERROR_INTERNAL": "BnormInternalError",
    "ERROR_WORKSPACE_TOO_SMALL": "BnormValueError",
}


def test_every_status_code_has_its_exception_class():
    codes = _header_codes()
    assert set(codes) == set(EXPECTED_CLASS), set(codes) ^ set(EXPECTED_CLASS)
    for name, value in codes.items():
        e = _core.error_for(value, "op")
        assert type(e) is getattr(bnorm, EXPECTED_CLASS[name]), name
        assert isinstance(e, bnorm.BnormError) and e.status == value
        assert str(e) == f"op: {_core.status_string(value)} (bnorm status {value})"
        # the C library knows every code
        assert _core.status_string(value) != _core.status_string(1000), name


def test_internal_and_unknown_codes():
    internal = _header_codes()["ERROR_INTERNAL"]
    assert isinstance(_core.error_for(internal, "op"), RuntimeError)
    assert not isinstance(_core.error_for(internal, "op"), ValueError)
    e = _core.error_for(1000, "op")
    assert type(e) is bnorm.BnormUnknownStatusError and e.status == 1000
    assert not isinstance(e, (ValueError, TypeError, MemoryError, RuntimeError))
    assert "unknown bnorm status code" in str(e)


def test_one_wording_for_a_wrong_per_channel_length():
    # the same mistake (a per-channel array of the wrong length) is worded
    # the same way by every function that takes per-channel arrays
    import bnorm.distributed as bd
    x = np.ones((4, 3, 5), f32)
    short = np.ones(2, f32)
    calls = {
        "batch_norm_train": lambda: bnorm.batch_norm_train(x, short),
        "batch_norm": lambda: bnorm.batch_norm(x, short, np.ones(3, f32)),
        "inference_scale_shift": lambda: bnorm.inference_scale_shift(np.ones(3), short),
        "distributed.normalize": lambda: bd.normalize(x, 20, short, np.ones(3)),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError) as e:
            call()
        assert re.match(r"^\w+ has 2 elements, expected 3( \(channels on axis 1\))?$",
                        str(e.value)), (what, str(e.value))
