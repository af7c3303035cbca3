"""The BatchNorm layer: modes, running statistics, backward, state."""
import numpy as np
import pytest

import bnorm
from bnorm import reference as ref
from conftest import assert_close


def test_defaults_and_attributes():
    layer = bnorm.BatchNorm(4)
    assert layer.training
    assert layer.weight.dtype == np.float32 and layer.weight.tolist() == [1] * 4
    assert layer.bias.tolist() == [0] * 4
    assert layer.running_mean.tolist() == [0] * 4
    assert layer.running_var.tolist() == [1] * 4
    assert layer.num_batches_tracked == 0
    assert layer.grad_weight is None and layer.grad_bias is None
    assert "BatchNorm(4" in repr(layer)
    assert layer.eval() is layer and not layer.training
    assert layer.train() is layer and layer.training


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_steps_match_reference(rng, dtype, momentum):
    layer = bnorm.BatchNorm(3, momentum=momentum, dtype=dtype)
    layer.weight[:] = [1.5, -1, 0.5]
    layer.bias[:] = [0, 1, 2]
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    for step in range(1, 5):
        x = (rng.standard_normal((6, 3, 4, 4)) * step + step).astype(dtype)
        y = layer(x)
        factor = 1.0 / step if momentum is None else momentum
        yr, _, _ = ref.batch_norm_train(x, layer.weight, layer.bias, axis=1,
                                        running_mean=rm, running_var=rv,
                                        momentum=factor)
        assert_close(y, yr, dtype)
        assert layer.num_batches_tracked == step
    assert_close(layer.running_mean, rm, dtype)
    assert_close(layer.running_var, rv, dtype)
    if momentum is None:  # cumulative average of the four batches
        assert 0 < abs(layer.running_mean).max()


def test_backward_in_train_and_eval(rng):
    layer = bnorm.BatchNorm(3, dtype=np.float64)
    layer.weight[:] = [2.0, 0.5, -1.0]
    x = rng.standard_normal((5, 3, 4))
    dy = rng.standard_normal(x.shape)
    layer(x)
    dx = layer.backward(dy)
    _, sm, si = ref.batch_norm_train(x, layer.weight, None)
    dxr, dwr, dbr = ref.batch_norm_backward(dy, x, sm, si, layer.weight)
    assert_close(dx, dxr, np.float64, factor=4)
    assert_close(layer.grad_weight, dwr, np.float64)
    assert_close(layer.grad_bias, dbr, np.float64)

    layer.eval()
    y = layer(x)
    yr = ref.batch_norm(x, layer.running_mean, layer.running_var, layer.weight,
                        layer.bias)
    assert_close(y, yr, np.float64)
    dx = layer.backward(dy)
    invstd = 1 / np.sqrt(layer.running_var + layer.eps)
    np.testing.assert_allclose(dx, dy * (layer.weight * invstd)[None, :, None],
                               rtol=1e-14)


def test_eval_without_tracking_uses_batch_stats(rng):
    layer = bnorm.BatchNorm(3, track_running_stats=False, affine=False).eval()
    assert layer.running_mean is None and layer.num_batches_tracked is None
    x = rng.standard_normal((8, 3)).astype(np.float32)
    assert_close(layer(x), ref.batch_norm_train(x)[0], np.float32)
    dx = layer.backward(np.ones_like(x))
    assert np.abs(dx).max() < 1e-5  # constant dy: the mean is removed
    assert layer.grad_weight is None


def test_eval_does_not_touch_running_stats(rng):
    layer = bnorm.BatchNorm(2).eval()
    layer(rng.standard_normal((4, 2)).astype(np.float32))
    assert layer.running_mean.tolist() == [0, 0]
    assert layer.num_batches_tracked == 0


def test_channels_last_layer(rng):
    layer = bnorm.BatchNorm(3, axis=-1, dtype=np.float64)
    x = rng.standard_normal((2, 4, 4, 3))
    y = layer(x)
    assert_close(y, ref.batch_norm_train(x, axis=-1)[0], np.float64)
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=(0, 1, 2)),
                               rtol=1e-12)


def test_state_dict_round_trip(rng):
    a = bnorm.BatchNorm(3)
    a(rng.standard_normal((4, 3, 2)).astype(np.float32))
    state = a.state_dict()
    assert sorted(state) == ["bias", "num_batches_tracked", "running_mean",
                             "running_var", "weight"]
    assert state["num_batches_tracked"].dtype == np.int64
    b = bnorm.BatchNorm(3)
    b.load_state_dict(state)
    for k in state:
        np.testing.assert_array_equal(b.state_dict()[k], state[k])
    state["running_mean"][0] = 99  # a copy, not a view
    assert a.running_mean[0] != 99
    assert sorted(bnorm.BatchNorm(3, affine=False, track_running_stats=False)
                  .state_dict()) == []


def test_load_state_dict_errors_leave_state_alone():
    layer = bnorm.BatchNorm(3)
    with pytest.raises(KeyError, match="missing keys \\['weight'\\]"):
        layer.load_state_dict({k: v for k, v in layer.state_dict().items()
                               if k != "weight"})
    bad = layer.state_dict()
    bad["bias"] = np.full(3, 7.0)
    bad["running_var"] = np.ones(4)
    with pytest.raises(ValueError, match="running_var has shape \\(4,\\), expected \\(3,\\)"):
        layer.load_state_dict(bad)
    assert layer.bias.tolist() == [0, 0, 0]


def test_layer_errors(rng):
    with pytest.raises(ValueError, match="num_features must be >= 1"):
        bnorm.BatchNorm(0)
    with pytest.raises(TypeError, match="dtype must be float32, float64, float16 or bfloat16"):
        bnorm.BatchNorm(3, dtype=np.int32)
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\]"):
        bnorm.BatchNorm(3, momentum=2)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        bnorm.BatchNorm(3, eps=0)
    layer = bnorm.BatchNorm(3)
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward"):
        layer.backward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="x has 4 channels on axis 1, expected 3"):
        layer(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="x has dtype float64, expected float32"):
        layer(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        layer(np.zeros((1, 3), np.float32))
    assert layer.num_batches_tracked == 0  # a failed call changes nothing
