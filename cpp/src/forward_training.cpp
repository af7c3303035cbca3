// Training forward: batch statistics, normalization, running statistics.
//
// Pass 1 reduces each channel to (count, mean, M2) in double precision: every
// unit (a chunk of a planar run, or a tile of rows) is summed twice while it
// sits in L1 -- once for its own mean, once for the squares of the deviations
// from it -- and the units are merged with Chan's formula in a fixed order.
// Pass 2 normalizes.
#include <cmath>
#include <vector>

#include "elementwise.hpp"
#include "kernels.hpp"
#include "threading.hpp"

namespace bnorm {
namespace {

// Moments of n contiguous values: mean, then corrected two-pass M2.
template <class T>
Moments run_moments(const T* x, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]);
  const double mean0 = s / static_cast<double>(n);
  double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean0;
    s1 += d;
    s2 += d * d;
  }
  const double dn = static_cast<double>(n);
  Moments m;
  m.n = dn;
  m.mean = mean0 + s1 / dn;
  m.m2 = s2 - s1 * s1 / dn;
  return m;
}

// Moments of `rows` rows of cw channels (row stride ld), merged into acc[j].
template <class T>
void tile_moments(const T* x, int64_t rows, int64_t ld, int64_t cw,
                  Moments* acc) {
  double sum[kChannelBlock], s1[kChannelBlock], s2[kChannelBlock];
  for (int64_t j = 0; j < cw; ++j) sum[j] = s1[j] = s2[j] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t j = 0; j < cw; ++j) sum[j] += static_cast<double>(xr[j]);
  }
  const double dn = static_cast<double>(rows);
  for (int64_t j = 0; j < cw; ++j) sum[j] /= dn;  // now the tile mean
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t j = 0; j < cw; ++j) {
      const double d = static_cast<double>(xr[j]) - sum[j];
      s1[j] += d;
      s2[j] += d * d;
    }
  }
  for (int64_t j = 0; j < cw; ++j) {
    Moments m;
    m.n = dn;
    m.mean = sum[j] + s1[j] / dn;
    m.m2 = s2[j] - s1[j] * s1[j] / dn;
    merge_into(acc[j], m);
  }
}

}  // namespace

template <class T>
void forward_training(const Plan& p, const T* x, T* y, const T* weight,
                      const T* bias, T* save_mean, T* save_invstd,
                      T* running_mean, T* running_var, double eps,
                      double momentum, bool unbiased) {
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  std::vector<Moments> part(static_cast<size_t>(p.groups * C));
  // Per channel: mean split in two T values, scale, shift.
  std::vector<T> coef(static_cast<size_t>(4 * C));

  // Pass 1: one partial per (channel unit, group).
  parallel_for(p.blocks * p.groups, total, [&](int64_t t) {
    const int64_t lane = t / p.groups, g = t % p.groups;
    const int64_t u0 = g * p.group_units;
    const int64_t u1 = std::min(p.units, u0 + p.group_units);
    if (p.rows) {
      const int64_t c0 = lane * p.block, cw = std::min(p.block, C - c0);
      Moments acc[kChannelBlock];
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t r0 = u * p.tile_rows;
        const int64_t nr = std::min(p.outer - r0, p.tile_rows);
        tile_moments(x + r0 * C + c0, nr, C, cw, acc);
      }
      for (int64_t j = 0; j < cw; ++j) part[g * C + c0 + j] = acc[j];
    } else {
      const int64_t c = lane;
      Moments acc;
      for (int64_t u = u0; u < u1; ++u) {
        int64_t o, b, e;
        p.planar_unit(u, &o, &b, &e);
        merge_into(acc, run_moments(x + (o * C + c) * p.inner + b, e - b));
      }
      part[g * C + c] = acc;
    }
  });

  // Merge the groups in order; write statistics; prepare the coefficients.
  const double m = static_cast<double>(p.outer * p.inner);
  const double correction = unbiased ? m / (m - 1) : 1.0;
  T* mh = coef.data();
  T* ml = mh + C;
  T* sc = ml + C;
  T* sh = sc + C;
  for (int64_t c = 0; c < C; ++c) {
    Moments acc = part[c];
    for (int64_t g = 1; g < p.groups; ++g) merge_into(acc, part[g * C + c]);
    const double mean = acc.mean;
    double var = acc.m2 / m;
    if (var < 0) var = 0;  // rounding; NaN stays NaN
    const double invstd = 1.0 / std::sqrt(var + eps);
    const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
    mh[c] = static_cast<T>(mean);
    ml[c] = static_cast<T>(mean - static_cast<double>(mh[c]));
    sc[c] = static_cast<T>(gamma * invstd);
    sh[c] = bias ? bias[c] : T(0);
    if (save_mean) save_mean[c] = static_cast<T>(mean);
    if (save_invstd) save_invstd[c] = static_cast<T>(invstd);
    if (running_mean) {
      running_mean[c] = static_cast<T>((1.0 - momentum) * running_mean[c] +
                                       momentum * mean);
      running_var[c] = static_cast<T>((1.0 - momentum) * running_var[c] +
                                      momentum * var * correction);
    }
  }

  // Pass 2: normalize.
  if (p.rows) {
    const int64_t rows_per_task =
        std::max<int64_t>(1, (kTileBytes * 8) / (C * int64_t(sizeof(T))));
    parallel_for(ceil_div(p.outer, rows_per_task), total, [&](int64_t t) {
      const int64_t r0 = t * rows_per_task;
      const int64_t nr = std::min(p.outer - r0, rows_per_task);
      affine_rows(x + r0 * C, y + r0 * C, nr, C, C, mh, ml, sc, sh);
    });
  } else {
    parallel_for(p.outer * C, total, [&](int64_t t) {
      const int64_t c = t % C;
      affine_run(x + t * p.inner, y + t * p.inner, p.inner, mh[c], ml[c],
                 sc[c], sh[c]);
    });
  }
}

template void forward_training<float>(const Plan&, const float*, float*,
                                      const float*, const float*, float*,
                                      float*, float*, float*, double, double,
                                      bool);
template void forward_training<double>(const Plan&, const double*, double*,
                                       const double*, const double*, double*,
                                       double*, double*, double*, double,
                                       double, bool);

}  // namespace bnorm
