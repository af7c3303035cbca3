// Training forward: batch statistics, normalization, running statistics.
//
// Each unit (plan.hpp) is reduced to (count, mean, M2) in double precision
// in one pass, as deviations from its first value (see from_shifted), and
// units are merged with Chan's formula in the plan's fixed order. When a whole lane fits in a core's cache, one
// thread reduces it and normalizes it at once, so x comes from memory once.
#include <cmath>
#include <vector>

#include "elementwise.hpp"
#include "kernels.hpp"
#include "reduce.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {
namespace {

// (count, mean, M2) from sums of deviations from a shift K:
// s1 = sum(x - K), s2 = sum((x - K)^2), M2 = s2 - s1 (s1 / n). Exact in exact
// arithmetic for any K. With K one of the values themselves, (mean - K)^2 is
// at most M2, so s2 <= (n + 1) M2: the subtraction loses at most log10(n + 1)
// of double's 16 digits (under 4 for the units of plan.hpp), whatever the
// data's offset -- unlike sum(x^2) - sum(x)^2 / n, which loses them all.
inline Moments from_shifted(double n, double shift, double s1, double s2) {
  const double q = s1 / n;
  Moments m;
  m.n = n;
  m.mean = shift + q;
  m.m2 = s2 - s1 * q;
  return m;
}

// Unit u of the channels [c0, c0 + cw) (planar), merged into acc[0..cw):
// one pass of deviations from the unit's first value. While the unit
// streams in, the next run is prefetched (or the first runs of unit `next`,
// if >= 0).
template <class T>
void planar_unit_moments(const Plan& p, const T* x, int64_t c0, int64_t cw,
                         int64_t u, int64_t next, Moments* acc) {
  int64_t o0, o1, b, e, n0 = 0, n1 = 0, nb = 0, ne = 0;
  p.planar_unit(u, &o0, &o1, &b, &e);
  if (next >= 0) p.planar_unit(next, &n0, &n1, &nb, &ne);
  const int64_t len = e - b;
  const double n = static_cast<double>((o1 - o0) * len);
  const int64_t stride = p.channels * p.inner;
  const T* base = x + c0 * p.inner + b;
  auto run = [&](int64_t o, int64_t j) { return base + o * stride + j * p.inner; };
  auto ahead = [&](int64_t o, int64_t j) -> const T* {
    if (o + 1 < o1) return run(o + 1, j);
    if (next >= 0 && ne - nb >= len && n0 < n1)
      return x + n0 * stride + (c0 + j) * p.inner + nb;
    return nullptr;
  };
  Lanes s1[kMaxPlanarBlock], s2[kMaxPlanarBlock];
  double shift[kMaxPlanarBlock];
  for (int64_t j = 0; j < cw; ++j) shift[j] = static_cast<double>(run(o0, j)[0]);
  for (int64_t o = o0; o < o1; ++o)
    for (int64_t j = 0; j < cw; ++j)
      add_deviations(run(o, j), len, shift[j], s1[j], s2[j], ahead(o, j));
  for (int64_t j = 0; j < cw; ++j)
    merge_into(acc[j], from_shifted(n, shift[j], s1[j].total(), s2[j].total()));
}

// Rows unit u of the channels [c0, c0 + cw), merged into acc[0..cw): one
// pass of deviations from the tile's first row.
// `scratch` holds 3 * cw doubles; cw may be any number of channels.
template <class T>
void rows_unit_moments(const Plan& p, const T* x, int64_t c0, int64_t cw,
                       int64_t u, Moments* acc, double* scratch) {
  int64_t r0, r1;
  p.rows_unit(u, &r0, &r1);
  const int64_t C = p.channels;
  const double n = static_cast<double>(r1 - r0);
  double* shift = scratch;
  double* s1 = scratch + cw;
  double* s2 = scratch + 2 * cw;
  const T* first = x + r0 * C + c0;
  for (int64_t j = 0; j < cw; ++j) {
    shift[j] = static_cast<double>(first[j]);
    s1[j] = s2[j] = 0;
  }
  // Four rows per sweep over the accumulators (added in row order, so the
  // sums are those of one row at a time) to spare loads and stores; a few
  // channels are kept in registers throughout.
  int64_t r = r0;
  if (rows_deviations_small(cw, first, r1 - r0, C, shift, s1, s2)) r = r1;
  for (; r + 4 <= r1; r += 4) {
    const T* x0 = x + r * C + c0;
    if (r + 4 + kRowsAhead < p.outer)
      prefetch_span(x0 + (4 + kRowsAhead) * C, cw * int64_t(sizeof(T)));
    // per channel, the same operations in the same order whichever j the
    // vector loop starts at: aligned to x's rows (simd.hpp)
    each(x0, cw, [&](int64_t j) {
      const double sh = shift[j];
      const double d0 = static_cast<double>(x0[j]) - sh;
      const double d1 = static_cast<double>(x0[j + C]) - sh;
      const double d2 = static_cast<double>(x0[j + 2 * C]) - sh;
      const double d3 = static_cast<double>(x0[j + 3 * C]) - sh;
      s1[j] = s1[j] + d0 + d1 + d2 + d3;
      s2[j] = s2[j] + d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
    });
  }
  for (; r < r1; ++r) {
    const T* xr = x + r * C + c0;
    BNORM_SIMD
    for (int64_t j = 0; j < cw; ++j) {
      const double d = static_cast<double>(xr[j]) - shift[j];
      s1[j] += d;
      s2[j] += d * d;
    }
  }
  for (int64_t j = 0; j < cw; ++j) merge_into(acc[j], from_shifted(n, shift[j], s1[j], s2[j]));
}

// Group g of the channels [c0, c0 + cw): out[j], from empty. For the rows
// layout, [c0, c0 + cw) is one lane; planar, up to kMaxPlanarBlock channels.
template <class T>
void group_moments(const Plan& p, const T* x, int64_t c0, int64_t cw,
                   int64_t g, Moments* out) {
  int64_t u0, u1;
  p.group_range(g, &u0, &u1);
  for (int64_t j = 0; j < cw; ++j) out[j] = Moments();
  double scratch[3 * kChannelBlock];
  for (int64_t u = u0; u < u1; ++u) {
    if (p.rows)
      rows_unit_moments(p, x, c0, cw, u, out, scratch);
    else
      planar_unit_moments(p, x, c0, cw, u, u + 1 < u1 ? u + 1 : -1, out);
  }
}

// Turns a channel's merged moments into its outputs: the coefficients of
// the normalization (mean rounded to T, scale, shift; see AffineOp), the
// saved statistics and the running-statistics update. m is the number of
// values each channel was normalized over (the global batch, for
// forward_apply).
template <class T>
struct Finish {
  const T *weight, *bias;
  T* const* arrays;  // mean, scale, shift
  T *save_mean, *save_invstd, *running_mean, *running_var;
  double m, eps, momentum, correction;

  void one(int64_t c, double mean, double var, double invstd) const {
    const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
    const double beta = bias ? static_cast<double>(bias[c]) : 0.0;
    const T mh = static_cast<T>(mean);
    const T scale = static_cast<T>(gamma * invstd);
    arrays[0][c] = mh;
    arrays[1][c] = scale;
    arrays[2][c] = static_cast<T>(
        beta - (mean - static_cast<double>(mh)) * static_cast<double>(scale));
    if (save_mean) save_mean[c] = static_cast<T>(mean);
    if (save_invstd) save_invstd[c] = static_cast<T>(invstd);
    if (running_mean) {
      running_mean[c] = static_cast<T>((1.0 - momentum) * running_mean[c] +
                                       momentum * mean);
      running_var[c] = static_cast<T>((1.0 - momentum) * running_var[c] +
                                      momentum * var * correction);
    }
  }
  // Channels [c0, c0 + cw), cw <= kChannelBlock, from their merged moments;
  // the divisions and square roots run as one vector loop.
  void operator()(int64_t c0, int64_t cw, const Moments* tot) const {
    double var[kChannelBlock], inv[kChannelBlock];
    for (int64_t j = 0; j < cw; ++j) var[j] = tot[j].m2;
    BNORM_SIMD
    for (int64_t j = 0; j < cw; ++j) {
      const double v = var[j] / m;
      var[j] = v < 0 ? 0.0 : v;  // rounding; NaN stays NaN
      inv[j] = 1.0 / std::sqrt(var[j] + eps);
    }
    for (int64_t j = 0; j < cw; ++j) one(c0 + j, tot[j].mean, var[j], inv[j]);
  }
};

// The reduction phase when lanes are not taken whole: the tasks thread tid
// takes from `tasks` (dealt to whichever thread is free; each writes its own
// partials) of the partial moments part[g * C + c] of every (group,
// channel). Rows layout: a task is a group of rows across all channels,
// read row after row (contiguous memory), unless there are fewer groups than
// threads; otherwise a task is a (lane, group) pair. Per channel, the same
// units in the same order as one lane at a time would take them. `scratch`
// holds scratch_stride(3 * C) doubles per thread.
template <class T>
void reduce_groups(const Plan& p, const T* x, Moments* part, double* scratch,
                   int tid, int n, Dealer& tasks) {
  const int64_t C = p.channels;
  if (p.rows && p.groups >= n) {
    for (int64_t g; tasks.take(&g) && g < p.groups;) {
      int64_t u0, u1;
      p.group_range(g, &u0, &u1);
      Moments* acc = part + g * C;
      for (int64_t u = u0; u < u1; ++u)
        rows_unit_moments(p, x, 0, C, u, acc, scratch + tid * scratch_stride(3 * C));
    }
    return;
  }
  Moments acc[kChannelBlock];
  for (int64_t t; tasks.take(&t);) {
    const int64_t lane = t / p.groups, g = t % p.groups;
    int64_t c0, cw;
    p.lane_channels(lane, &c0, &cw);
    group_moments(p, x, c0, cw, g, acc);
    for (int64_t j = 0; j < cw; ++j) part[g * C + c0 + j] = acc[j];
  }
}

// Channels [c0, c0 + cw)'s partials merged in group order into tot.
inline void merge_groups(const Plan& p, const Moments* part, int64_t c0,
                         int64_t cw, Moments* tot) {
  for (int64_t j = 0; j < cw; ++j) {
    tot[j] = Moments();
    for (int64_t g = 0; g < p.groups; ++g)
      merge_into(tot[j], part[g * p.channels + c0 + j]);
  }
}

// forward_training with the elementwise op `op` (plain, or fused with a
// residual and a ReLU).
template <class T, class Op>
void forward_training_with(const Plan& p, const T* x, const Op& op,
                           const Param<T>* weight, const Param<T>* bias,
                           Param<T>* save_mean, Param<T>* save_invstd,
                           Param<T>* running_mean, Param<T>* running_var,
                           double eps, double momentum, bool unbiased) {
  using P = Param<T>;
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  const int nt = threads_for(total);
  const int64_t block = p.whole_block(nt, sizeof(T), Op::kArrays * sizeof(T), l2_cache_bytes());
  std::vector<Moments> part(block > 0 ? 0 : static_cast<size_t>(p.groups * C));
  std::vector<P> coef(static_cast<size_t>(3 * C));  // mean, scale, shift
  P* const arrays[3] = {coef.data(), coef.data() + C, coef.data() + 2 * C};
  const StoredCoefs<P, 3> fill{arrays};
  const double m = static_cast<double>(p.outer * p.inner);
  const double correction = unbiased ? m / (m - 1) : 1.0;

  const Finish<P> finish{weight, bias, arrays, save_mean, save_invstd,
                        running_mean, running_var, m, eps, momentum, correction};

  if (block > 0) {
    Dealer blocks(ceil_div(C, block));
    parallel(nt, [&](int, int) {
      Moments tot[kChannelBlock], acc[kChannelBlock];
      for (int64_t blk; blocks.take(&blk);) {
        const int64_t c0 = blk * block, cw = std::min(block, C - c0);
        for (int64_t j = 0; j < cw; ++j) tot[j] = Moments();
        for (int64_t g = 0; g < p.groups; ++g) {
          group_moments(p, x, c0, cw, g, acc);
          for (int64_t j = 0; j < cw; ++j) merge_into(tot[j], acc[j]);
        }
        finish(c0, cw, tot);
        sweep_channels<T>(p, op, fill, c0, cw);
      }
    });
    return;
  }

  std::vector<double> scratch(p.rows ? static_cast<size_t>(nt * scratch_stride(3 * C)) : 0);
  // (lane, group) pairs, or groups (the lower ones of the same count)
  Dealer tasks(p.lanes * p.groups);
  auto reduce = [&](int tid, int n) {
    reduce_groups(p, x, part.data(), scratch.data(), tid, n, tasks);
  };
  auto merge = [&](int tid, int n) {
    int64_t c_begin, c_end;
    share(C, tid, n, &c_begin, &c_end);
    Moments tot[kChannelBlock];
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kChannelBlock) {
      const int64_t cw = std::min(kChannelBlock, c_end - c0);
      merge_groups(p, part.data(), c0, cw, tot);
      finish(c0, cw, tot);
    }
  };
  auto normalize = [&](int tid, int n) { sweep<T>(p, op, fill, tid, n); };
  parallel(nt, reduce, merge, normalize);
}

}  // namespace

template <class T>
void forward_training(const Plan& p, const T* x, const T* residual, T* y,
                      const Param<T>* weight, const Param<T>* bias,
                      Param<T>* save_mean, Param<T>* save_invstd,
                      Param<T>* running_mean, Param<T>* running_var, double eps,
                      double momentum, bool unbiased, bool relu) {
  const bool stream = stream_output(p.outer * p.channels * p.inner * int64_t(sizeof(T)));
  auto run = [&](const auto& op) {
    forward_training_with(p, x, op, weight, bias, save_mean, save_invstd,
                          running_mean, running_var, eps, momentum, unbiased);
  };
  if (residual && relu)
    run(AffineOp<T, true, true>{x, y, stream, residual});
  else if (residual)
    run(AffineOp<T, true, false>{x, y, stream, residual});
  else if (relu)
    run(AffineOp<T, false, true>{x, y, stream});
  else
    run(AffineOp<T>{x, y, stream});
}

// The split phases of forward_training, for statistics that span several
// processes (bnorm_moments, bnorm_forward_normalize). moments() computes
// exactly the per-channel moments forward_training normalizes with.
template <class T>
void moments(const Plan& p, const T* x, double* mean, double* m2) {
  const int64_t C = p.channels;
  const int nt = threads_for(p.outer * C * p.inner);
  // Planar data: a thread takes blocks of channels whole, which reads each
  // outer index's runs of the block as one span (with no normalization to
  // follow, whether the block fits in cache does not matter).
  const int64_t block = p.whole_block(nt, sizeof(T), sizeof(T), INT64_MAX / 8);
  if (block > 0) {
    Dealer blocks(ceil_div(C, block));
    parallel(nt, [&](int, int) {
      Moments tot[kMaxPlanarBlock], acc[kMaxPlanarBlock];
      for (int64_t blk; blocks.take(&blk);) {
        const int64_t c0 = blk * block, cw = std::min(block, C - c0);
        for (int64_t j = 0; j < cw; ++j) tot[j] = Moments();
        for (int64_t g = 0; g < p.groups; ++g) {
          group_moments(p, x, c0, cw, g, acc);
          for (int64_t j = 0; j < cw; ++j) merge_into(tot[j], acc[j]);
        }
        for (int64_t j = 0; j < cw; ++j) {
          mean[c0 + j] = tot[j].mean;
          m2[c0 + j] = tot[j].m2;
        }
      }
    });
    return;
  }
  std::vector<Moments> part(static_cast<size_t>(p.groups * C));
  std::vector<double> scratch(p.rows ? static_cast<size_t>(nt * scratch_stride(3 * C)) : 0);
  // (lane, group) pairs, or groups (the lower ones of the same count)
  Dealer tasks(p.lanes * p.groups);
  auto reduce = [&](int tid, int n) {
    reduce_groups(p, x, part.data(), scratch.data(), tid, n, tasks);
  };
  auto merge = [&](int tid, int n) {
    int64_t c_begin, c_end;
    share(C, tid, n, &c_begin, &c_end);
    Moments tot[kChannelBlock];
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kChannelBlock) {
      const int64_t cw = std::min(kChannelBlock, c_end - c0);
      merge_groups(p, part.data(), c0, cw, tot);
      for (int64_t j = 0; j < cw; ++j) {
        mean[c0 + j] = tot[j].mean;
        m2[c0 + j] = tot[j].m2;
      }
    }
  };
  parallel(nt, reduce, merge);
}

template <class T>
void forward_apply(const Plan& p, const T* x, T* y, const Param<T>* weight,
                   const Param<T>* bias, const double* mean, const double* m2,
                   double count, Param<T>* save_mean, Param<T>* save_invstd,
                   Param<T>* running_mean, Param<T>* running_var, double eps,
                   double momentum, bool unbiased) {
  using P = Param<T>;
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  std::vector<P> coef(static_cast<size_t>(3 * C));
  P* const arrays[3] = {coef.data(), coef.data() + C, coef.data() + 2 * C};
  const Finish<P> finish{weight, bias, arrays, save_mean, save_invstd,
                         running_mean, running_var, count, eps, momentum,
                         unbiased ? count / (count - 1) : 1.0};
  Moments tot[kChannelBlock];
  for (int64_t c0 = 0; c0 < C; c0 += kChannelBlock) {
    const int64_t cw = std::min(kChannelBlock, C - c0);
    for (int64_t j = 0; j < cw; ++j) tot[j] = Moments{count, mean[c0 + j], m2[c0 + j]};
    finish(c0, cw, tot);
  }
  if (total == 0) return;
  const StoredCoefs<P, 3> fill{arrays};
  const AffineOp<T> op{x, y, stream_output(total * int64_t(sizeof(T)))};
  parallel(threads_for(total), [&](int tid, int n) { sweep<T>(p, op, fill, tid, n); });
}

#define BNORM_INSTANTIATE(T)                                                     \
  template void moments<T>(const Plan&, const T*, double*, double*);            \
  template void forward_apply<T>(const Plan&, const T*, T*, const Param<T>*,    \
                                 const Param<T>*, const double*, const double*, \
                                 double, Param<T>*, Param<T>*, Param<T>*,       \
                                 Param<T>*, double, double, bool);              \
  template void forward_training<T>(const Plan&, const T*, const T*, T*,        \
                                    const Param<T>*, const Param<T>*,           \
                                    Param<T>*, Param<T>*, Param<T>*, Param<T>*, \
                                    double, double, bool, bool);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
BNORM_INSTANTIATE(Half)
BNORM_INSTANTIATE(BFloat16)
#undef BNORM_INSTANTIATE

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
