// Backward: dbias = sum(g), dweight = invstd * sum(g * (x - mean)), and dx.
//
// The sums are reduced in double, one partial per (group, channel) in unit
// order, merged in group order (plan.hpp). dx = (g * k - r) - (x - mean) * q
// with per-channel k, q, r (or g * k with frozen statistics). Whole lanes
// that fit in cache are reduced and differentiated by one thread at once.
#include <cmath>
#include <vector>

#include "elementwise.hpp"
#include "kernels.hpp"
#include "reduce.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {
namespace {

struct Sums {
  double g = 0, gx = 0;
};

// The ReLU mask's inputs (reduce.hpp): the forward's output y (kMaskY, the
// layout of dy), or per-channel forward coefficients (kMaskX).
template <class T>
struct MaskArgs {
  const T* y = nullptr;
  const Param<T> *fm = nullptr, *fs = nullptr, *fb = nullptr;
};

// Group g of the channels [c0, c0 + cw): out[j]. For the rows layout,
// [c0, c0 + cw) is one lane; planar, up to kMaxPlanarBlock channels.
// `scratch` holds 3 * cw doubles for the rows layout, where cw may be any
// number of channels.
template <int M = kNoMask, class T>
void group_sums(const Plan& p, const T* dy, const T* x, const Param<T>* mean,
                const MaskArgs<T>& mk, int64_t c0, int64_t cw, int64_t g,
                Sums* out, double* scratch) {
  int64_t u0, u1;
  p.group_range(g, &u0, &u1);
  const int64_t C = p.channels;
  if (p.rows) {
    double* mu = scratch;
    double* a = scratch + cw;
    double* b = scratch + 2 * cw;
    for (int64_t j = 0; j < cw; ++j) {
      mu[j] = static_cast<double>(mean[c0 + j]);
      a[j] = b[j] = 0;
    }
    int64_t r0, r1, unused;
    p.rows_unit(u0, &r0, &unused);
    p.rows_unit(u1 - 1, &unused, &r1);
    // With a ReLU mask: its own vector loop. Otherwise four rows per sweep
    // over the accumulators, added in row order, and a few channels kept in
    // registers throughout.
    const int64_t o0 = r0 * C + c0;
    if constexpr (M != kNoMask) {
      rows_gradients_masked<M>(dy + o0, x + o0, M == kMaskY ? mk.y + o0 : nullptr,
                               r1 - r0, C, cw, mu, M == kMaskX ? mk.fm + c0 : nullptr,
                               M == kMaskX ? mk.fs + c0 : nullptr,
                               M == kMaskX ? mk.fb + c0 : nullptr, a, b);
    } else {
      int64_t r = r0;
      if (rows_gradients_small(cw, dy + o0, x + o0, r1 - r0, C, mu, a, b)) r = r1;
      for (; r + 4 <= r1; r += 4) {
        // (no software prefetch: as for the planar runs, add_gradients in
        // reduce.hpp, it measured slower than the hardware prefetcher alone)
        const T* g0 = dy + r * C + c0;
        const T* x0 = x + r * C + c0;
        // per channel, the same operations in the same order whichever j
        // the vector loop starts at: aligned to x's rows (simd.hpp)
        each(x0, cw, [&](int64_t j) {
          const double m = mu[j];
          const double q0 = static_cast<double>(g0[j]);
          const double q1 = static_cast<double>(g0[j + C]);
          const double q2 = static_cast<double>(g0[j + 2 * C]);
          const double q3 = static_cast<double>(g0[j + 3 * C]);
          a[j] = a[j] + q0 + q1 + q2 + q3;
          b[j] = b[j] + q0 * (static_cast<double>(x0[j]) - m) +
                 q1 * (static_cast<double>(x0[j + C]) - m) +
                 q2 * (static_cast<double>(x0[j + 2 * C]) - m) +
                 q3 * (static_cast<double>(x0[j + 3 * C]) - m);
        });
      }
      for (; r < r1; ++r) {
        const T* gr = dy + r * C + c0;
        const T* xr = x + r * C + c0;
        BNORM_SIMD
        for (int64_t j = 0; j < cw; ++j) {
          const double gj = static_cast<double>(gr[j]);
          a[j] += gj;
          b[j] += gj * (static_cast<double>(xr[j]) - mu[j]);
        }
      }
    }
    for (int64_t j = 0; j < cw; ++j) out[j] = {a[j], b[j]};
    return;
  }
  const int64_t stride = C * p.inner;
  for (int64_t j = 0; j < cw; ++j) out[j] = Sums();
  for (int64_t u = u0; u < u1; ++u) {
    int64_t o0, o1, lo, hi;
    p.planar_unit(u, &o0, &o1, &lo, &hi);
    Lanes ua[kMaxPlanarBlock], ub[kMaxPlanarBlock];
    for (int64_t o = o0; o < o1; ++o) {
      for (int64_t j = 0; j < cw; ++j) {
        const int64_t off = o * stride + (c0 + j) * p.inner + lo;
        const int64_t c = c0 + j;
        add_gradients<M>(dy + off, x + off, hi - lo, static_cast<double>(mean[c]),
                         ua[j], ub[j],
                         M == kMaskY ? mk.y + off : nullptr,
                         M == kMaskX ? mk.fm[c] : Param<T>(0),
                         M == kMaskX ? mk.fs[c] : Param<T>(0),
                         M == kMaskX ? mk.fb[c] : Param<T>(0));
      }
    }
    for (int64_t j = 0; j < cw; ++j) {
      out[j].g += ua[j].total();
      out[j].gx += ub[j].total();
    }
  }
}

// Channel c's coefficients of dx (k, r, mean, q: see DxOp) and its
// gradients of weight and bias, from its sums over m values.
template <class T>
struct BackFinish {
  const T *mean, *invstd, *weight;
  T* const* arrays;
  T *dweight, *dbias;
  double m;
  bool frozen;
  void operator()(int64_t c, const Sums& s) const {
    const double is = static_cast<double>(invstd[c]);
    const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
    const double k = gamma * is;
    arrays[0][c] = static_cast<T>(k);
    arrays[1][c] = frozen ? T(0) : static_cast<T>(k * s.g / m);
    arrays[2][c] = mean[c];
    arrays[3][c] = frozen ? T(0) : static_cast<T>(k * is * is * s.gx / m);
    if (dbias) dbias[c] = static_cast<T>(s.g);
    if (dweight) dweight[c] = static_cast<T>(s.gx * is);
  }
};

// The reduction phase when lanes are not taken whole: the tasks thread tid
// takes from `tasks` (see forward_training.cpp's reduce_groups) of the
// partial sums part[g * C + c]. Rows layout: a task is a group of rows
// across all channels, read row after row (contiguous memory), unless there
// are fewer groups than threads; the per-channel sums are the same.
// `scratch`: scratch_stride(3 * C) doubles per thread (rows layout).
template <int M = kNoMask, class T>
void reduce_sums(const Plan& p, const T* dy, const T* x, const Param<T>* mean,
                 const MaskArgs<T>& mk, Sums* part, double* scratch, int tid, int n,
                 Dealer& tasks) {
  const int64_t C = p.channels;
  if (p.rows && p.groups >= n) {
    for (int64_t g; tasks.take(&g) && g < p.groups;)
      group_sums<M>(p, dy, x, mean, mk, 0, C, g, part + g * C,
                    scratch + tid * scratch_stride(3 * C));
    return;
  }
  // planar, or rows with fewer groups than threads: (lane, group) tasks
  Sums acc[kChannelBlock];
  double lane_scratch[3 * kChannelBlock];
  for (int64_t t; tasks.take(&t);) {
    const int64_t lane = t / p.groups, g = t % p.groups;
    int64_t c0, cw;
    p.lane_channels(lane, &c0, &cw);
    group_sums<M>(p, dy, x, mean, mk, c0, cw, g, acc, lane_scratch);
    for (int64_t j = 0; j < cw; ++j) part[g * C + c0 + j] = acc[j];
  }
}

// Channel c's partial sums added in group order.
inline Sums merge_sums(const Plan& p, const Sums* part, int64_t c) {
  Sums tot;
  for (int64_t g = 0; g < p.groups; ++g) {
    tot.g += part[g * p.channels + c].g;
    tot.gx += part[g * p.channels + c].gx;
  }
  return tot;
}

// backward with ReLU mask M; `op` and `fill` are the elementwise pass and its
// coefficients (plain dx, frozen dx, or the fused op with dres).
template <int M, class T, class Op>
void backward_with(const Plan& p, const T* dy, const T* x, const MaskArgs<T>& mk,
                   const Param<T>* mean, const Param<T>* invstd,
                   const Param<T>* weight, const Param<T>* bias, bool write,
                   Param<T>* dweight, Param<T>* dbias, bool frozen, const Op& op) {
  using P = Param<T>;
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  const double m = static_cast<double>(p.outer * p.inner);
  const bool need_sums = total > 0 && (dweight || dbias || (write && !frozen));
  const int nt = threads_for(total);
  const int64_t block = need_sums && write
                            ? p.whole_block(nt, 2 * sizeof(T), Op::kArrays * sizeof(T),
                                            l2_cache_bytes())
                            : 0;
  std::vector<Sums> part(need_sums && block == 0 ? static_cast<size_t>(p.groups * C) : 0);
  // k, r, mean, q; then the forward's m, s, b for a recomputed mask
  std::vector<P> coef(static_cast<size_t>(7 * C));
  P* const arrays[7] = {coef.data(), coef.data() + C, coef.data() + 2 * C,
                        coef.data() + 3 * C, coef.data() + 4 * C,
                        coef.data() + 5 * C, coef.data() + 6 * C};
  MaskArgs<T> mask = mk;
  if (M == kMaskX) {
    // the forward's coefficients from the saved statistics (AffineOp):
    // y = (x - mean) * (gamma * invstd) + beta
    for (int64_t c = 0; c < C; ++c) {
      const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
      arrays[4][c] = mean[c];
      arrays[5][c] = static_cast<P>(gamma * static_cast<double>(invstd[c]));
      arrays[6][c] = bias ? bias[c] : P(0);
    }
    mask.fm = arrays[4];
    mask.fs = arrays[5];
    mask.fb = arrays[6];
  }
  const StoredCoefs<P, Op::K> fill{arrays};
  const BackFinish<P> finish{mean, invstd, weight, arrays, dweight, dbias, m, frozen};
  auto apply = [&](int tid, int n) {
    if (write && total > 0) sweep<T>(p, op, fill, tid, n);
  };

  if (block > 0) {
    Dealer blocks(ceil_div(C, block));
    parallel(nt, [&](int, int) {
      Sums tot[kChannelBlock], acc[kChannelBlock];
      for (int64_t blk; blocks.take(&blk);) {
        const int64_t c0 = blk * block, cw = std::min(block, C - c0);
        for (int64_t j = 0; j < cw; ++j) tot[j] = Sums();
        for (int64_t g = 0; g < p.groups; ++g) {  // planar: no scratch
          group_sums<M>(p, dy, x, mean, mask, c0, cw, g, acc, nullptr);
          for (int64_t j = 0; j < cw; ++j) {
            tot[j].g += acc[j].g;
            tot[j].gx += acc[j].gx;
          }
        }
        for (int64_t j = 0; j < cw; ++j) finish(c0 + j, tot[j]);
        sweep_channels<T>(p, op, fill, c0, cw);
      }
    });
    return;
  }

  std::vector<double> scratch(need_sums && block == 0 && p.rows
                                  ? static_cast<size_t>(nt * scratch_stride(3 * C)) : 0);
  Dealer tasks(p.lanes * p.groups);  // (lane, group) pairs, or groups
  auto reduce = [&](int tid, int n) {
    if (need_sums)
      reduce_sums<M>(p, dy, x, mean, mask, part.data(), scratch.data(), tid, n, tasks);
  };
  auto merge = [&](int tid, int n) {
    int64_t c_begin, c_end;
    share(C, tid, n, &c_begin, &c_end);
    for (int64_t c = c_begin; c < c_end; ++c)
      finish(c, need_sums ? merge_sums(p, part.data(), c) : Sums());
  };
  if (need_sums)
    parallel(nt, reduce, merge, apply);
  else
    parallel(nt, merge, apply);
}

template <int M, bool kRes, class T>
void backward_masked(const Plan& p, const T* dy, const T* x, const T* y,
                     const Param<T>* mean, const Param<T>* invstd,
                     const Param<T>* weight, const Param<T>* bias, T* dx,
                     Param<T>* dweight, Param<T>* dbias, T* dres,
                     bool frozen) {
  const MaskArgs<T> mk{y};
  const bool write = dx || dres;
  if (frozen)
    backward_with<M>(p, dy, x, mk, mean, invstd, weight, bias, write, dweight, dbias,
                     true, DxMaskOp<T, M, true, kRes>{dy, x, y, dx, dres});
  else
    backward_with<M>(p, dy, x, mk, mean, invstd, weight, bias, write, dweight, dbias,
                     false, DxMaskOp<T, M, false, kRes>{dy, x, y, dx, dres});
}

}  // namespace

// relu: g = dy where the forward's output y > 0 (y given) or where the
// recomputed pre-activation is > 0 (y null); dres, if given, receives g.
template <class T>
void backward(const Plan& p, const T* dy, const T* x, const T* y,
              const Param<T>* mean, const Param<T>* invstd,
              const Param<T>* weight, const Param<T>* bias, T* dx,
              Param<T>* dweight, Param<T>* dbias, T* dres, bool frozen, bool relu) {
  if (!relu && !dres) {
    const bool stream = stream_output(p.outer * p.channels * p.inner * int64_t(sizeof(T)));
    const MaskArgs<T> none;
    if (frozen)
      backward_with<kNoMask>(p, dy, x, none, mean, invstd, weight, bias, dx != nullptr,
                             dweight, dbias, true, ScaleOp<T>{dy, dx, stream});
    else
      backward_with<kNoMask>(p, dy, x, none, mean, invstd, weight, bias, dx != nullptr,
                             dweight, dbias, false, DxOp<T>{dy, x, dx, stream});
    return;
  }
  const int64_t total = p.outer * p.channels * p.inner;
  if (relu && y && dres && dres != x && stream_output(total * int64_t(sizeof(T)))) {
    // Too large for the cache: dres = g is an output anyway, so write it in
    // one pass and run the plain backward on it (whose dx pass streams);
    // the same arithmetic as the one-pass form, so the same bits.
    using P = Param<T>;
    parallel(threads_for(total), [&](int tid, int n) {
      int64_t a, b;
      share(total, tid, n, &a, &b);
      each(dres + a, b - a, [&](int64_t k) {
        const int64_t i = a + k;
        st(dres, i, static_cast<double>(ld(y, i)) > 0.0 ? static_cast<P>(ld(dy, i)) : P(0));
      });
    });
    backward(p, static_cast<const T*>(dres), x, static_cast<const T*>(nullptr), mean, invstd,
             weight, bias, dx, dweight, dbias, static_cast<T*>(nullptr), frozen, false);
    return;
  }
  if (!relu)
    backward_masked<kNoMask, true>(p, dy, x, y, mean, invstd, weight, bias, dx,
                                   dweight, dbias, dres, frozen);
  else if (y && dres)
    backward_masked<kMaskY, true>(p, dy, x, y, mean, invstd, weight, bias, dx,
                                  dweight, dbias, dres, frozen);
  else if (y)
    backward_masked<kMaskY, false>(p, dy, x, y, mean, invstd, weight, bias, dx,
                                   dweight, dbias, static_cast<T*>(nullptr), frozen);
  else if (dres)
    backward_masked<kMaskX, true>(p, dy, x, y, mean, invstd, weight, bias, dx,
                                  dweight, dbias, dres, frozen);
  else
    backward_masked<kMaskX, false>(p, dy, x, y, mean, invstd, weight, bias, dx,
                                   dweight, dbias, static_cast<T*>(nullptr), frozen);
}

// The split phases of backward, for sums that span several processes
// (bnorm_backward_reduce, bnorm_backward_apply): the same sums backward()
// forms, and dx from sums and a count given by the caller.
template <class T>
void backward_sums(const Plan& p, const T* dy, const T* x, const Param<T>* mean,
                   double* sum_dy, double* sum_dy_xmu) {
  const int64_t C = p.channels;
  const int nt = threads_for(p.outer * C * p.inner);
  // Planar data: blocks of channels whole per thread (as in moments()).
  const int64_t block = p.whole_block(nt, 2 * sizeof(T), 2 * sizeof(T), INT64_MAX / 8);
  if (block > 0) {
    Dealer blocks(ceil_div(C, block));
    parallel(nt, [&](int, int) {
      Sums acc[kMaxPlanarBlock];
      for (int64_t blk; blocks.take(&blk);) {
        const int64_t c0 = blk * block, cw = std::min(block, C - c0);
        Sums tot[kMaxPlanarBlock];
        for (int64_t g = 0; g < p.groups; ++g) {
          group_sums(p, dy, x, mean, MaskArgs<T>(), c0, cw, g, acc, nullptr);
          for (int64_t j = 0; j < cw; ++j) {
            tot[j].g += acc[j].g;
            tot[j].gx += acc[j].gx;
          }
        }
        for (int64_t j = 0; j < cw; ++j) {
          sum_dy[c0 + j] = tot[j].g;
          sum_dy_xmu[c0 + j] = tot[j].gx;
        }
      }
    });
    return;
  }
  std::vector<Sums> part(static_cast<size_t>(p.groups * C));
  std::vector<double> scratch(p.rows ? static_cast<size_t>(nt * scratch_stride(3 * C)) : 0);
  Dealer tasks(p.lanes * p.groups);  // (lane, group) pairs, or groups
  auto reduce = [&](int tid, int n) {
    reduce_sums(p, dy, x, mean, MaskArgs<T>(), part.data(), scratch.data(), tid, n,
                tasks);
  };
  auto merge = [&](int tid, int n) {
    int64_t c_begin, c_end;
    share(C, tid, n, &c_begin, &c_end);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const Sums s = merge_sums(p, part.data(), c);
      sum_dy[c] = s.g;
      sum_dy_xmu[c] = s.gx;
    }
  };
  parallel(nt, reduce, merge);
}

template <class T>
void backward_apply(const Plan& p, const T* dy, const T* x, const Param<T>* mean,
                    const Param<T>* invstd, const Param<T>* weight,
                    const double* sum_dy, const double* sum_dy_xmu, double count,
                    T* dx, Param<T>* dweight, Param<T>* dbias) {
  using P = Param<T>;
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  std::vector<P> coef(static_cast<size_t>(4 * C));
  P* const arrays[4] = {coef.data(), coef.data() + C, coef.data() + 2 * C,
                        coef.data() + 3 * C};
  const BackFinish<P> finish{mean, invstd, weight, arrays, dweight, dbias, count, false};
  for (int64_t c = 0; c < C; ++c) finish(c, Sums{sum_dy[c], sum_dy_xmu[c]});
  if (!dx || total == 0) return;
  const DxOp<T> op{dy, x, dx, stream_output(total * int64_t(sizeof(T)))};
  const StoredCoefs<P, 4> fill{arrays};
  parallel(threads_for(total), [&](int tid, int n) { sweep<T>(p, op, fill, tid, n); });
}

#define BNORM_INSTANTIATE(T)                                                     \
  template void backward_sums<T>(const Plan&, const T*, const T*, const Param<T>*, \
                                 double*, double*);                             \
  template void backward_apply<T>(const Plan&, const T*, const T*,              \
                                  const Param<T>*, const Param<T>*,             \
                                  const Param<T>*, const double*, const double*, \
                                  double, T*, Param<T>*, Param<T>*);            \
  template void backward<T>(const Plan&, const T*, const T*, const T*,          \
                            const Param<T>*, const Param<T>*, const Param<T>*,  \
                            const Param<T>*, T*, Param<T>*, Param<T>*, T*, bool, \
                            bool);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
BNORM_INSTANTIATE(Half)
BNORM_INSTANTIATE(BFloat16)
#undef BNORM_INSTANTIATE

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
