// Backward: dbias = sum(g), dweight = invstd * sum(g * (x - mean)), and dx.
//
// Pass 1 reduces sum(g) and sum(g * (x - mean)) per channel in double, one
// partial per (channel unit, group) merged in group order (see plan.hpp).
// Pass 2 writes dx = g * k - (x - mean) * q - r with per-channel k, q, r.
#include <cmath>
#include <vector>

#include "kernels.hpp"
#include "threading.hpp"

namespace bnorm {
namespace {

struct Sums {
  double g = 0, gx = 0;
};

template <class T>
Sums run_sums(const T* dy, const T* x, int64_t n, double mean) {
  double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(dy[i]);
    a += g;
    b += g * (static_cast<double>(x[i]) - mean);
  }
  return {a, b};
}

template <class T>
void tile_sums(const T* dy, const T* x, int64_t rows, int64_t ld, int64_t cw,
               const double* mean, double* a, double* b) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = dy + r * ld;
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t j = 0; j < cw; ++j) {
      const double g = static_cast<double>(gr[j]);
      a[j] += g;
      b[j] += g * (static_cast<double>(xr[j]) - mean[j]);
    }
  }
}

}  // namespace

template <class T>
void backward(const Plan& p, const T* dy, const T* x, const T* mean,
              const T* invstd, const T* weight, T* dx, T* dweight, T* dbias,
              bool frozen) {
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  const double m = static_cast<double>(p.outer * p.inner);
  const bool need_sums = dweight || dbias || (dx && !frozen);
  // Per channel: k, q, r of the dx formula.
  std::vector<T> coef(static_cast<size_t>(3 * C));
  std::vector<Sums> part(need_sums ? static_cast<size_t>(p.groups * C) : 0);

  if (need_sums && total > 0) {
    parallel_for(p.blocks * p.groups, total, [&](int64_t t) {
      const int64_t lane = t / p.groups, g = t % p.groups;
      const int64_t u0 = g * p.group_units;
      const int64_t u1 = std::min(p.units, u0 + p.group_units);
      if (p.rows) {
        const int64_t c0 = lane * p.block, cw = std::min(p.block, C - c0);
        double mu[kChannelBlock], a[kChannelBlock], b[kChannelBlock];
        for (int64_t j = 0; j < cw; ++j) {
          mu[j] = static_cast<double>(mean[c0 + j]);
          a[j] = b[j] = 0;
        }
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t r0 = u * p.tile_rows;
          const int64_t nr = std::min(p.outer - r0, p.tile_rows);
          const int64_t off = r0 * C + c0;
          tile_sums(dy + off, x + off, nr, C, cw, mu, a, b);
        }
        for (int64_t j = 0; j < cw; ++j) part[g * C + c0 + j] = {a[j], b[j]};
      } else {
        const int64_t c = lane;
        const double mu = static_cast<double>(mean[c]);
        Sums acc;
        for (int64_t u = u0; u < u1; ++u) {
          int64_t o, b, e;
          p.planar_unit(u, &o, &b, &e);
          const int64_t off = (o * C + c) * p.inner + b;
          const Sums s = run_sums(dy + off, x + off, e - b, mu);
          acc.g += s.g;
          acc.gx += s.gx;
        }
        part[g * C + c] = acc;
      }
    });
  }

  T* k = coef.data();
  T* q = k + C;
  T* r = q + C;
  for (int64_t c = 0; c < C; ++c) {
    Sums acc;
    if (need_sums && total > 0) {
      for (int64_t g = 0; g < p.groups; ++g) {
        acc.g += part[g * C + c].g;
        acc.gx += part[g * C + c].gx;
      }
    }
    const double is = static_cast<double>(invstd[c]);
    const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
    const double kk = gamma * is;
    k[c] = static_cast<T>(kk);
    q[c] = frozen ? T(0) : static_cast<T>(kk * is * is * acc.gx / m);
    r[c] = frozen ? T(0) : static_cast<T>(kk * acc.g / m);
    if (dbias) dbias[c] = static_cast<T>(acc.g);
    if (dweight) dweight[c] = static_cast<T>(acc.gx * is);
  }
  if (!dx || total == 0) return;

  if (p.rows) {
    const int64_t rows_per_task =
        std::max<int64_t>(1, (kTileBytes * 8) / (C * int64_t(sizeof(T))));
    parallel_for(ceil_div(p.outer, rows_per_task), total, [&](int64_t t) {
      const int64_t r0 = t * rows_per_task;
      const int64_t nr = std::min(p.outer - r0, rows_per_task);
      for (int64_t i = r0; i < r0 + nr; ++i) {
        const T* gr = dy + i * C;
        const T* xr = x + i * C;
        T* dr = dx + i * C;
        if (frozen) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dr[c] = gr[c] * k[c];
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            dr[c] = (gr[c] * k[c] - r[c]) - (xr[c] - mean[c]) * q[c];
        }
      }
    });
  } else {
    parallel_for(p.outer * C, total, [&](int64_t t) {
      const int64_t c = t % C;
      const int64_t off = t * p.inner;
      const T* g = dy + off;
      const T* xs = x + off;
      T* d = dx + off;
      const T kc = k[c], qc = q[c], rc = r[c], mc = mean[c];
      if (frozen) {
#pragma omp simd
        for (int64_t i = 0; i < p.inner; ++i) d[i] = g[i] * kc;
      } else {
#pragma omp simd
        for (int64_t i = 0; i < p.inner; ++i)
          d[i] = (g[i] * kc - rc) - (xs[i] - mc) * qc;
      }
    });
  }
}

template void backward<float>(const Plan&, const float*, const float*,
                              const float*, const float*, const float*,
                              float*, float*, float*, bool);
template void backward<double>(const Plan&, const double*, const double*,
                               const double*, const double*, const double*,
                               double*, double*, double*, bool);

}  // namespace bnorm
