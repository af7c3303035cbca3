"""Hostile input at the Python door: every public function called with
arguments of the wrong type, shape, dtype, layout or value must raise a
ValueError, TypeError or MemoryError with a message naming the problem,
never crash, and never change the caller's arrays. Each case below is one
distinct bad call."""
import numpy as np
import pytest

import bnorm

f32, f64 = np.float32, np.float64
N, C, L = 4, 3, 5


def good():
    """Fresh valid arguments (the cases spoil one thing each)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, L)).astype(f32)
    return dict(x=x, dy=rng.standard_normal((N, C, L)).astype(f32),
                rm=np.zeros(C, f32), rv=np.ones(C, f32), w=np.ones(C, f32),
                b=np.zeros(C, f32), sm=np.zeros(C, f32), si=np.ones(C, f32),
                out=np.zeros((N, C, L), f32), lw=np.ones((C, 2), f32))


_SHARED = np.zeros(N * C * L + 1, f32)


def shifted_pair():
    """Two (N, C, L) views of one buffer, one element apart."""
    return _SHARED[:-1].reshape(N, C, L), _SHARED[1:].reshape(N, C, L)


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def huge():
    # 2**42 float32 values that are not in memory: any copy must fail cleanly
    return np.lib.stride_tricks.as_strided(np.zeros(1, f32), shape=(1 << 20, 4, 1 << 20),
                                           strides=(0, 0, 0))


T = (TypeError,)
V = (ValueError,)
M = (MemoryError, ValueError)

# (id, call(args) , exception types, message pattern)
CASES = [
    # the data
    ("x None", lambda a: bnorm.batch_norm_train(None), T + V, "dtype|dimensions"),
    ("x string", lambda a: bnorm.batch_norm_train("abc"), T, "dtype"),
    ("x object array", lambda a: bnorm.batch_norm_train(np.array([[1, "a"], [2, 3]], object)), T, "dtype object"),
    ("x int", lambda a: bnorm.batch_norm_train(np.ones((4, 3), np.int64)), T, "dtype int64"),
    ("x bool", lambda a: bnorm.batch_norm_train(np.ones((4, 3), bool)), T, "dtype bool"),
    ("x complex", lambda a: bnorm.batch_norm_train(np.ones((4, 3), complex)), T, "dtype complex"),
    ("x longdouble", lambda a: bnorm.batch_norm_train(np.ones((4, 3), np.longdouble)), T, "has dtype"),
    ("x 0-d", lambda a: bnorm.batch_norm_train(np.float32(1)), V, "at least 2 dimensions"),
    ("x 1-d", lambda a: bnorm.batch_norm_train(np.ones(5, f32)), V, "at least 2 dimensions"),
    ("x ragged list", lambda a: bnorm.batch_norm_train([[1.0, 2.0], [3.0]]), V + T, None),
    ("x huge (inference)", lambda a: bnorm.batch_norm(huge(), np.zeros(4, f32), np.ones(4, f32)), M, None),
    ("x huge (training)", lambda a: bnorm.batch_norm_train(huge()), M, None),
    ("x structured", lambda a: bnorm.batch_norm_train(np.zeros((4, 3), "f4,f4")), T, "dtype"),
    ("x datetime", lambda a: bnorm.batch_norm_train(np.zeros((4, 3), "M8[s]")), T, "dtype"),
    # axis
    ("axis float", lambda a: bnorm.batch_norm_train(a["x"], axis=1.0), T, "axis must be an integer"),
    ("axis str", lambda a: bnorm.batch_norm_train(a["x"], axis="1"), T, "axis must be an integer"),
    ("axis None", lambda a: bnorm.batch_norm_train(a["x"], axis=None), T, "axis must be an integer"),
    ("axis too large", lambda a: bnorm.batch_norm_train(a["x"], axis=3), V, "out of range"),
    ("axis too small", lambda a: bnorm.batch_norm_train(a["x"], axis=-4), V, "out of range"),
    ("axis huge", lambda a: bnorm.batch_norm(a["x"], a["rm"], a["rv"], axis=1 << 70), V, "out of range"),
    # eps and momentum
    ("eps str", lambda a: bnorm.batch_norm_train(a["x"], eps="small"), T, "eps must be a number"),
    ("eps None", lambda a: bnorm.batch_norm(a["x"], a["rm"], a["rv"], eps=None), T, "eps must be a number"),
    ("eps complex", lambda a: bnorm.batch_norm_train(a["x"], eps=1j), T, "eps must be a number"),
    ("eps 0", lambda a: bnorm.batch_norm_train(a["x"], eps=0.0), V, "eps must be a finite number > 0"),
    ("eps negative", lambda a: bnorm.batch_norm(a["x"], a["rm"], a["rv"], eps=-1e-5), V, "eps"),
    ("eps nan", lambda a: bnorm.batch_norm_train(a["x"], eps=float("nan")), V, "eps"),
    ("eps inf", lambda a: bnorm.batch_norm(a["x"], a["rm"], a["rv"], eps=float("inf")), V, "eps"),
    ("eps numeric string", lambda a: bnorm.batch_norm_train(a["x"], eps="1e-5"), T, "eps must be a number"),
    ("eps array", lambda a: bnorm.batch_norm_train(a["x"], eps=np.ones(2)), T + V, "eps"),
    ("momentum > 1", lambda a: bnorm.batch_norm_train(a["x"], running_mean=a["rm"], running_var=a["rv"], momentum=1.5), V, "momentum"),
    ("momentum < 0", lambda a: bnorm.batch_norm_train(a["x"], running_mean=a["rm"], running_var=a["rv"], momentum=-0.1), V, "momentum"),
    ("momentum nan", lambda a: bnorm.batch_norm_train(a["x"], running_mean=a["rm"], running_var=a["rv"], momentum=float("nan")), V, "momentum"),
    ("momentum str", lambda a: bnorm.batch_norm_train(a["x"], running_mean=a["rm"], running_var=a["rv"], momentum="0.1"), T, "momentum"),
    # per-channel arrays
    ("weight short", lambda a: bnorm.batch_norm_train(a["x"], np.ones(2, f32)), V, "weight has 2 elements, expected 3"),
    ("weight 2-d", lambda a: bnorm.batch_norm_train(a["x"], np.ones((3, 1), f32)), V, r"weight has shape \(3, 1\)"),
    ("weight 0-d", lambda a: bnorm.batch_norm_train(a["x"], np.float32(1)), V, "weight has shape"),
    ("weight strings", lambda a: bnorm.batch_norm_train(a["x"], np.array(["a", "b", "c"])), T, "weight has dtype"),
    ("weight object", lambda a: bnorm.batch_norm_train(a["x"], np.array([1, 2, None], object)), T, "weight has dtype object"),
    ("bias complex", lambda a: bnorm.batch_norm_train(a["x"], bias=np.ones(3, complex)), T, "bias has dtype complex"),
    ("running_mean list", lambda a: bnorm.batch_norm_train(a["x"], running_mean=[0.0] * 3, running_var=a["rv"]), T, "running_mean must be a numpy.ndarray"),
    ("running_var read-only", lambda a: bnorm.batch_norm_train(a["x"], running_mean=a["rm"], running_var=readonly(a["rv"])), V, "running_var is read-only"),
    ("running_mean float64", lambda a: bnorm.batch_norm_train(a["x"], running_mean=np.zeros(3), running_var=a["rv"]), T, "running_mean has dtype float64"),
    ("running_mean strided", lambda a: bnorm.batch_norm_train(a["x"], running_mean=np.zeros(6, f32)[::2], running_var=a["rv"]), V, "contiguous"),
    ("running stats shared", lambda a: bnorm.batch_norm_train(a["x"], running_mean=a["rm"], running_var=a["rm"]), V, "share memory"),
    ("running_mean alone", lambda a: bnorm.batch_norm_train(a["x"], running_mean=a["rm"]), V, "given together"),
    ("inference without stats", lambda a: bnorm.batch_norm(a["x"]), V, "required when training=False"),
    ("inference stats short", lambda a: bnorm.batch_norm(a["x"], np.zeros(2, f32), a["rv"]), V, "running_mean has 2 elements"),
    # out=
    ("out read-only", lambda a: bnorm.batch_norm(a["x"], a["rm"], a["rv"], out=readonly(a["out"])), V, "out is read-only"),
    ("out wrong dtype", lambda a: bnorm.batch_norm(a["x"], a["rm"], a["rv"], out=np.zeros((N, C, L))), V, "out has dtype float64"),
    ("out wrong shape", lambda a: bnorm.batch_norm_train(a["x"], out=np.zeros((N, C), f32)), V, "out has shape"),
    ("out strided", lambda a: bnorm.batch_norm_train(a["x"], out=np.zeros((N, C, 2 * L), f32)[..., ::2]), V, "C-contiguous"),
    ("out list", lambda a: bnorm.batch_norm_train(a["x"], out=[0.0] * 60), T, "out must be a numpy.ndarray"),
    ("out overlaps x", lambda a: bnorm.batch_norm_train(a["x"].reshape(-1)[:-1].reshape(59, 1)[:58].reshape(29, 2),
                                                       out=a["x"].reshape(-1)[1:59].reshape(29, 2)), V, "overlap"),
    ("out byte-swapped", lambda a: bnorm.batch_norm(a["x"], a["rm"], a["rv"], out=a["out"].astype(">f4")), V, "out has dtype >f4"),
    ("backward out overlaps dy", lambda a: bnorm.batch_norm_backward(
        *shifted_pair()[:1], a["x"], a["sm"], a["si"], out=shifted_pair()[1]), V, "overlap"),
    # data in non-native byte order: never read as native floats
    ("x byte-swapped", lambda a: bnorm.batch_norm_train(a["x"].astype(">f4")), T, "byte order"),
    ("x byte-swapped inference", lambda a: bnorm.batch_norm(a["x"].astype(">f4"), a["rm"], a["rv"]), T, "byte order"),
    ("dy byte-swapped", lambda a: bnorm.batch_norm_backward(a["dy"].astype(">f4"), a["x"], a["sm"], a["si"]), T, "byte order"),
    ("running_mean byte-swapped", lambda a: bnorm.batch_norm_train(a["x"], running_mean=a["rm"].astype(">f4"), running_var=a["rv"]), T, "running_mean has dtype >f4"),
    # training sizes
    ("one value per channel", lambda a: bnorm.batch_norm_train(np.ones((1, 3), f32)), V, "more than 1 value per channel"),
    ("empty training", lambda a: bnorm.batch_norm_train(np.ones((0, 3), f32)), V, "empty input"),
    # backward
    ("dy shape", lambda a: bnorm.batch_norm_backward(a["dy"][:2], a["x"], a["sm"], a["si"]), V, "dy has shape"),
    ("dy dtype", lambda a: bnorm.batch_norm_backward(a["dy"].astype(f64), a["x"], a["sm"], a["si"]), T, "dy has dtype float64"),
    ("dy object", lambda a: bnorm.batch_norm_backward(a["dy"].astype(object), a["x"], a["sm"], a["si"]), T, "dy has dtype object"),
    ("save_mean None", lambda a: bnorm.batch_norm_backward(a["dy"], a["x"], None, a["si"]), V, "required"),
    ("save_invstd short", lambda a: bnorm.batch_norm_backward(a["dy"], a["x"], a["sm"], a["si"][:2]), V, "save_invstd has 2 elements"),
    ("backward out read-only", lambda a: bnorm.batch_norm_backward(a["dy"], a["x"], a["sm"], a["si"], out=readonly(a["out"])), V, "read-only"),
    ("backward axis", lambda a: bnorm.batch_norm_backward(a["dy"], a["x"], a["sm"], a["si"], axis=7), V, "out of range"),
    # the layer
    ("layer num_features 0", lambda a: bnorm.BatchNorm(0), V, "num_features"),
    ("layer num_features str", lambda a: bnorm.BatchNorm("3"), T, "num_features"),
    ("layer dtype int", lambda a: bnorm.BatchNorm(3, dtype=np.int32), T + V, "dtype"),
    ("layer eps", lambda a: bnorm.BatchNorm(3, eps=-1.0), V, "eps"),
    ("layer momentum", lambda a: bnorm.BatchNorm(3, momentum=2.0), V, "momentum"),
    ("layer wrong channels", lambda a: bnorm.BatchNorm(5)(a["x"]), V, "5"),
    ("layer backward first", lambda a: bnorm.BatchNorm(3).backward(a["dy"]), (RuntimeError,), "before forward"),
    ("layer state keys", lambda a: bnorm.BatchNorm(3).load_state_dict({"weight": np.ones(3)}), (KeyError,), "missing keys"),
    ("layer state shape", lambda a: bnorm.BatchNorm(3).load_state_dict(dict(bnorm.BatchNorm(3).state_dict(), weight=np.ones(4))), V, "weight has shape"),
    # inference helpers
    ("scale_shift mismatch", lambda a: bnorm.inference_scale_shift(np.zeros(3), np.ones(2)), V, "running_var has 2 elements"),
    ("scale_shift strings", lambda a: bnorm.inference_scale_shift(np.array(["a"]), np.ones(1)), T, "running_mean has dtype"),
    ("scale_shift eps", lambda a: bnorm.inference_scale_shift(a["rm"], a["rv"], eps=0), V, "eps"),
    ("fold weight int", lambda a: bnorm.fold_batch_norm(np.ones((3, 2), int), None, a["rm"], a["rv"]), T, "layer_weight has dtype"),
    ("fold weight 0-d", lambda a: bnorm.fold_batch_norm(np.float32(1), None, a["rm"], a["rv"]), V, "at least 1 dimension"),
    ("fold axis", lambda a: bnorm.fold_batch_norm(a["lw"], None, a["rm"], a["rv"], axis=2), V, "out of range"),
    ("fold bias length", lambda a: bnorm.fold_batch_norm(a["lw"], np.ones(2, f32), a["rm"], a["rv"]), V, "layer_bias has 2 elements"),
    ("fold stats length", lambda a: bnorm.fold_batch_norm(a["lw"], None, a["rm"], np.ones(4, f32)), V, "running_var has 4 elements"),
    # threads
    ("threads 0", lambda a: bnorm.set_num_threads(0), V, "n must be >= 1"),
    ("threads float", lambda a: bnorm.set_num_threads(2.0), T, "n must be an integer"),
    ("threads None", lambda a: bnorm.set_num_threads(None), T, "n must be an integer"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_call_raises_clearly_and_writes_nothing(case):
    _, call, types, pattern = case
    args = good()
    before = {k: v.copy() for k, v in args.items()}
    with pytest.raises(types, match=pattern):
        call(args)
    for k, v in args.items():
        assert np.array_equal(v, before[k]), f"{k} was changed"
