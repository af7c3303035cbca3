"""Population statistics (Algorithm 2, steps 8-12): bnorm.PopulationStats
and BatchNorm.recompute_statistics, held against the paper's formulas
computed here in float64 NumPy."""
import math

import numpy as np
import pytest

import bnorm
from bnorm import _core


def paper(batches, axis=1):
    """E_B[mu_B] and m/(m-1) E_B[var_B] for equal batch sizes, straight
    from Algorithm 2."""
    mus, vs = [], []
    for x in batches:
        xd = np.moveaxis(np.asarray(x, np.float64), axis, -1).reshape(-1, x.shape[axis])
        mus.append(xd.mean(0))
        vs.append(xd.var(0))
    m = xd.shape[0]
    return np.mean(mus, 0), m / (m - 1) * np.mean(vs, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((8, 3, 5, 5), 1), ((6, 4, 4, 3), -1), ((20, 7), 1)])
def test_equal_batches_follow_algorithm_2(rng, dtype, shape, axis):
    xs = [(3 + 2 * rng.standard_normal(shape)).astype(dtype) for _ in range(12)]
    pop = bnorm.PopulationStats(shape[axis], axis=axis)
    for x in xs:
        assert pop.update(x) is pop
    mean, var = paper(xs, axis)
    assert pop.batches == 12 and pop.count == 12 * (np.prod(shape) // shape[axis])
    np.testing.assert_allclose(pop.mean, mean, rtol=1e-14)
    np.testing.assert_allclose(pop.var, var, rtol=1e-13)
    # not the pooled variance of all values (the batches' means differ)
    pooled = np.moveaxis(np.stack(xs).astype(np.float64), axis if axis < 0 else axis + 1, -1)
    pooled = pooled.reshape(-1, shape[axis]).var(0, ddof=1)
    assert not np.allclose(pop.var, pooled, rtol=1e-6)


def test_unequal_batches_are_weighted_by_size(rng):
    sizes = [2, 5, 17, 40]
    xs = [rng.standard_normal((n, 3)) * (k + 1) + k for k, n in enumerate(sizes)]
    pop = bnorm.PopulationStats(3)
    for x in xs:
        pop.update(x)
    w = np.array(sizes, np.float64)
    mean = sum(n * x.mean(0) for n, x in zip(sizes, xs)) / w.sum()
    var = sum(n * x.var(0, ddof=1) for n, x in zip(sizes, xs)) / w.sum()
    np.testing.assert_allclose(pop.mean, mean, rtol=1e-14)
    np.testing.assert_allclose(pop.var, var, rtol=1e-13)
    assert pop.count == sum(sizes)


def test_merge_of_shards_equals_one_pass(rng):
    xs = [(1e4 + rng.standard_normal((16, 5, 3))).astype(np.float32) for _ in range(30)]
    whole = bnorm.PopulationStats(5)
    a, b, empty = bnorm.PopulationStats(5), bnorm.PopulationStats(5), bnorm.PopulationStats(5)
    for k, x in enumerate(xs):
        whole.update(x)
        (a if k % 3 else b).update(x)
    a.merge(empty)
    empty.merge(a)  # into an empty accumulator
    assert empty.batches == a.batches
    np.testing.assert_array_equal(empty.mean, a.mean)
    a.merge(b)
    assert a.batches == 30 and a.count == whole.count
    np.testing.assert_allclose(a.mean, whole.mean, rtol=1e-15)
    np.testing.assert_allclose(a.var, whole.var, rtol=1e-14)
    a.merge(a)  # itself: every batch twice, the same statistics
    assert a.batches == 60
    np.testing.assert_allclose(a.mean, whole.mean, rtol=1e-15)
    np.testing.assert_allclose(a.var, whole.var, rtol=1e-14)


def test_many_batches_far_from_zero():
    """200,000 batches with means 1e8 standard deviations from zero: the
    accumulator's mean and variance against correctly rounded sums."""
    rng = np.random.default_rng(3)
    k, m = 200_000, 4
    mus = 1e8 + rng.standard_normal(k)
    m2s = rng.uniform(0.5, 1.5, k) * (m - 1)
    state = np.empty(_core.population_state_size(1))
    _core.population_init(1, state)
    for mu, q in zip(mus, m2s):
        _core.population_add(1, state, m, np.array([mu]), np.array([q]))
    mean, var = np.empty(1), np.empty(1)
    batches, count = _core.population_result(1, state, mean, var)
    assert batches == k and count == k * m
    ref_mean = math.fsum(mus) / k
    ref_var = math.fsum(m2s / (m - 1)) / k
    assert abs(mean[0] - ref_mean) <= 2e-16 * ref_mean
    assert abs(var[0] - ref_var) <= 4e-16 * ref_var


def test_before_any_batch_and_errors(rng):
    pop = bnorm.PopulationStats(2)
    assert pop.batches == 0 and pop.count == 0
    np.testing.assert_array_equal(pop.mean, [0, 0])
    np.testing.assert_array_equal(pop.var, [1, 1])
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        pop.update(np.ones((1, 2)))
    with pytest.raises(ValueError, match="expected 2 \\(num_features\\)"):
        pop.update(np.ones((4, 3)))
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        pop.update(np.ones((4, 2), np.int32))
    with pytest.raises(ValueError, match="expected 2"):
        pop.merge(bnorm.PopulationStats(3))
    with pytest.raises(TypeError):
        pop.merge("x")
    with pytest.raises(ValueError):
        bnorm.PopulationStats(0)
    assert pop.batches == 0  # nothing was folded in by the failed calls
    # the C library refuses a state that was never initialized
    with pytest.raises(bnorm.BnormError, match="inconsistent"):
        _core.population_add(2, np.zeros(14), 3, np.zeros(2), np.zeros(2))
    pop.update(rng.standard_normal((5, 2)))
    pop.reset()
    assert pop.batches == 0


@pytest.mark.parametrize("axis", [1, -1])
def test_recompute_statistics(rng, axis):
    shape = (16, 4, 3, 3) if axis == 1 else (16, 3, 3, 4)
    layer = bnorm.BatchNorm(4, axis=axis, dtype=np.float64)
    xs = [5 + rng.standard_normal(shape) for _ in range(8)]
    pop = layer.recompute_statistics(iter(xs))
    mean, var = paper(xs, axis)
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-14)
    np.testing.assert_allclose(layer.running_var, var, rtol=1e-13)
    assert pop.batches == 8 and layer.num_batches_tracked == 0 and layer.training
    before = layer.running_mean.copy()
    with pytest.raises(ValueError, match="empty"):
        layer.recompute_statistics([])
    np.testing.assert_array_equal(layer.running_mean, before)
    with pytest.raises(RuntimeError, match="track_running_stats"):
        bnorm.BatchNorm(4, track_running_stats=False).recompute_statistics(xs)
    # the inference network then normalizes with them
    layer.eval()
    y = layer(xs[0])
    ref = bnorm.reference.batch_norm(xs[0], mean, var, layer.weight, layer.bias,
                                     training=False, axis=axis)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)
