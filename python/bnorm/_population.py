"""Population statistics: the paper's Algorithm 2, steps 8-12."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from . import _core
from ._functional import _num_features, _prepare

__all__ = ["PopulationStats"]


class PopulationStats:
    """The statistics the inference network normalizes with (Algorithm 2,
    steps 8-12), accumulated over training batches B of m values per
    channel::

        mean = E_B[mu_B]                  (mean of the batch means)
        var  = m/(m-1) * E_B[var_B]       (mean of the biased batch variances,
                                           made unbiased)

    Batches of unequal size m_B are weighted by size:
    ``mean = sum(m_B mu_B) / sum(m_B)`` and
    ``var = sum(m_B * var_B * m_B/(m_B-1)) / sum(m_B)`` (for equal sizes,
    the two lines above). ``var`` is the mean *within-batch* variance, as the
    paper defines it, not the variance of all values pooled.

    ``update(x)`` folds in one batch (its channels on ``axis``);
    ``merge(other)`` folds in another accumulator (of other shards of the
    data); ``mean``, ``var`` (float64), ``batches`` and ``count`` (values per
    channel so far) read the result. The sums are kept in double precision as
    deviations from the first batch's means with compensated additions (the C
    library's ``bnorm_population_*``), so millions of batches far from zero
    keep full precision.
    """

    def __init__(self, num_features: int, *, axis: int = 1):
        n = _num_features(num_features)
        self.num_features = n
        self.axis = operator.index(axis)
        self._state = np.empty(_core.population_state_size(n), np.float64)
        self.reset()

    def reset(self) -> None:
        """Forgets every batch."""
        _core.population_init(self.num_features, self._state)

    def update(self, x: Any) -> "PopulationStats":
        """Folds in the batch x (float32 or float64, its channels on axis)."""
        x, view, _ = _prepare(x, self.axis, None)
        if view.channels != self.num_features:
            raise ValueError(f"x has {view.channels} channels on axis {view.axis}, "
                             f"expected {self.num_features} (num_features)")
        m = view.outer * view.inner
        if m <= 1:
            raise ValueError("Expected more than 1 value per channel in a batch, "
                             f"got input shape {x.shape}")
        mean = np.empty(self.num_features, np.float64)
        m2 = np.empty(self.num_features, np.float64)
        _core.moments((view.flat, mean, m2), view.outer, view.channels, view.inner)
        _core.population_add(self.num_features, self._state, m, mean, m2)
        return self

    def merge(self, other: "PopulationStats") -> "PopulationStats":
        """Folds in the batches of another accumulator."""
        if not isinstance(other, PopulationStats):
            raise TypeError(f"other must be a PopulationStats, got {type(other).__name__}")
        if other.num_features != self.num_features:
            raise ValueError(f"other has {other.num_features} channels, expected "
                             f"{self.num_features}")
        _core.population_merge(self.num_features, self._state, other._state.copy())
        return self

    def _result(self):
        mean = np.empty(self.num_features, np.float64)
        var = np.empty(self.num_features, np.float64)
        batches, count = _core.population_result(self.num_features, self._state, mean, var)
        return batches, count, mean, var

    @property
    def mean(self) -> np.ndarray:
        """E[x] per channel (0 before any batch)."""
        return self._result()[2]

    @property
    def var(self) -> np.ndarray:
        """Var[x] per channel, unbiased (1 before any batch)."""
        return self._result()[3]

    @property
    def batches(self) -> int:
        """How many batches were folded in."""
        return self._result()[0]

    @property
    def count(self) -> int:
        """How many values per channel were folded in (sum of the m_B)."""
        return self._result()[1]

    def __repr__(self) -> str:
        return (f"PopulationStats({self.num_features}, axis={self.axis}): "
                f"{self.batches} batches")
