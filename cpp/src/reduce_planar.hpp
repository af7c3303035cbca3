// The reducers of the planar layout: NCHW, NCDHW, (N, C, L) -- every
// tensor whose channel's values are `outer` contiguous runs of `inner > 1`.
//
//   planar_moments: a group's (count, mean, M2) per channel (training
//                   statistics);
//   planar_sums:    a group's sum(g) and sum(g * (x - mean)) per channel (the
//                   backward's sums), g = dy behind an optional ReLU mask.
//
// Units and groups are those of plan.hpp. A unit is reduced with kLanes
// accumulators per channel (simd.hpp) in one pass, then merged into the
// group's result in unit order. cw <= kMaxPlanarBlock channels at once.
#pragma once

#include <cstdint>

#include "mask.hpp"
#include "plan.hpp"
#include "simd.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {

// d = x[i] - shift;  s1 += d;  s2 += d * d.  Prefetches pf[0 .. n) if given.
// d is formed in StatDev<T> (float for half-precision data: the shift is one
// of the values, exact as a float; double for float32 and float64) and added
// in double, d * d exact for halves (simd.hpp).
template <class T>
inline void add_deviations(const T* x, int64_t n, double shift, Lanes& s1,
                           Lanes& s2, const T* pf = nullptr) {
  using D = StatDev<T>;
  const D k0 = static_cast<D>(shift);
  int64_t i = 0;
#ifdef BNORM_VECTOR_TYPES
  Regs v1(s1), v2(s2);
  for (; i + kLanes <= n; i += kLanes) {
    prefetch_lanes(pf, i);
#pragma GCC unroll 16
    for (int k = 0; k < kRegs; ++k) {
      const VecD d = deviation_lanes<D>(x + i + k * kVecLanes, k0);
      v1.r[k] += d;
      v2.r[k] = add_product<D>(v2.r[k], d, d);
    }
  }
#ifdef BNORM_MASKED_TAILS
  if (i < n) {  // the last < kLanes values (simd.hpp)
#pragma GCC unroll 16
    for (int k = 0; k < kRegs; ++k) {
      const int64_t r = n - i - k * kVecLanes;
      if (r <= 0) break;
      const VecD d = deviation_lanes_first<D>(x + i + k * kVecLanes, k0, r);
      v1.r[k] += d;
      v2.r[k] = add_product<D>(v2.r[k], d, d);
    }
    i = n;
  }
#endif
  v1.store(s1);
  v2.store(s2);
#else
  for (; i + kLanes <= n; i += kLanes) {
    prefetch_lanes(pf, i);
    for (int k = 0; k < kLanes; ++k) {
      const double d = deviation(x[i + k], k0);
      s1.v[k] += d;
      s2.v[k] = add_product<D>(s2.v[k], d, d);
    }
  }
#endif
  for (int k = 0; i + k < n; ++k) {
    const double d = deviation(x[i + k], k0);
    s1.v[k] += d;
    s2.v[k] = add_product<D>(s2.v[k], d, d);
  }
}

// a += g[i];  b += g[i] * (x[i] - mean), g[i] = dy[i] masked by M (y, or the
// channel's forward coefficients m, s, b). No software prefetch here:
// prefetching the next unit's runs (as add_deviations does) made the planar
// backward reduction 20-25% slower on tensors larger than L2 (measured, 1
// and 2 threads). planar_sums prefetches the next outer index's runs when
// they are shorter than a page.
// (kRanged: fm and fs are the ends of the channel's interval of x where the
// mask is open; mask.hpp.)
template <int M = kNoMask, bool kRanged = false, class T>
inline void add_gradients(const T* g, const T* x, int64_t n, double mean,
                          Lanes& a, Lanes& b, const T* y = nullptr,
                          Param<T> fm = 0, Param<T> fs = 0, Param<T> fb = 0) {
  // x - mean formed in Dev<T> (the saved mean of float and half-precision
  // data is a float), g * (x - mean) exact in double (simd.hpp)
  using D = Dev<T>;
  const D m0 = static_cast<D>(mean);
  int64_t i = 0;
#ifdef BNORM_VECTOR_TYPES
  Regs va(a), vb(b);
  for (; i + kLanes <= n; i += kLanes) {
#pragma GCC unroll 16
    for (int k = 0; k < kRegs; ++k) {
      const int64_t o = i + k * kVecLanes;
      const VecD gi = masked<M, kRanged>(load_lanes(g + o), from_y(M) ? y + o : x + o, fm, fs, fb);
      va.r[k] += gi;
      vb.r[k] = add_product<D>(vb.r[k], gi, deviation_lanes<D>(x + o, m0));
    }
  }
#ifdef BNORM_MASKED_TAILS
  if (i < n) {  // the last < kLanes values (simd.hpp): every input 0 past n
#pragma GCC unroll 16
    for (int k = 0; k < kRegs; ++k) {
      const int64_t o = i + k * kVecLanes;
      const int64_t r = n - o;
      if (r <= 0) break;
      const VecD v = M == kNoMask ? VecD{} : load_lanes_first(from_y(M) ? y + o : x + o, r);
      const VecD gi =
          keep_first(masked_lanes<M, kRanged>(load_lanes_first(g + o, r), v, fm, fs, fb), r);
      va.r[k] += gi;
      vb.r[k] = add_product<D>(vb.r[k], gi, deviation_lanes_first<D>(x + o, m0, r));
    }
    i = n;
  }
#endif
  va.store(a);
  vb.store(b);
#else
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double gi = masked<M, kRanged>(static_cast<double>(g[i + k]), x[i + k],
                                  from_y(M) ? y[i + k] : T(), fm, fs, fb);
      a.v[k] += gi;
      b.v[k] = add_product<D>(b.v[k], gi, deviation(x[i + k], m0));
    }
  }
#endif
  for (int k = 0; i + k < n; ++k) {
    const double gi = masked<M, kRanged>(static_cast<double>(g[i + k]), x[i + k],
                                from_y(M) ? y[i + k] : T(), fm, fs, fb);
    a.v[k] += gi;
    b.v[k] = add_product<D>(b.v[k], gi, deviation(x[i + k], m0));
  }
}

// Unit u of the channels [c0, c0 + cw), merged into acc[0..cw): one pass
// of deviations from the unit's first value. While the unit streams in, the
// next run is prefetched (or the first runs of unit `next`, if >= 0).
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
  LaneArray<kMaxPlanarBlock> s1(cw), s2(cw);
  double shift[kMaxPlanarBlock];
  for (int64_t j = 0; j < cw; ++j) shift[j] = static_cast<double>(run(o0, j)[0]);
  for (int64_t o = o0; o < o1; ++o)
    for (int64_t j = 0; j < cw; ++j)
      add_deviations(run(o, j), len, shift[j], s1[j], s2[j], ahead(o, j));
  for (int64_t j = 0; j < cw; ++j)
    merge_into(acc[j], from_shifted(n, shift[j], s1[j].total(), s2[j].total()));
}

// Group g of the channels [c0, c0 + cw): out[j], from empty.
template <class T>
void planar_moments(const Plan& p, const T* x, int64_t c0, int64_t cw, int64_t g,
                    Moments* out) {
  int64_t u0, u1;
  p.group_range(g, &u0, &u1);
  for (int64_t j = 0; j < cw; ++j) out[j] = Moments();
  for (int64_t u = u0; u < u1; ++u)
    planar_unit_moments(p, x, c0, cw, u, u + 1 < u1 ? u + 1 : -1, out);
}

// Group g of the channels [c0, c0 + cw): out[j], from empty.
template <int M, class T>
void planar_sums(const Plan& p, const T* dy, const T* x, const Param<T>* mean,
                 const MaskArgs<T>& mk, int64_t c0, int64_t cw, int64_t g, Sums* out) {
  int64_t u0, u1;
  p.group_range(g, &u0, &u1);
  const int64_t stride = p.channels * p.inner;
  for (int64_t j = 0; j < cw; ++j) out[j] = Sums();
  for (int64_t u = u0; u < u1; ++u) {
    int64_t o0, o1, lo, hi;
    p.planar_unit(u, &o0, &o1, &lo, &hi);
    LaneArray<kMaxPlanarBlock> ua(cw), ub(cw);
    const int64_t run_bytes = (hi - lo) * int64_t(sizeof(T));
    const bool short_runs = run_bytes < kPageBytes;
    for (int64_t o = o0; o < o1; ++o) {
      for (int64_t j = 0; j < cw; ++j) {
        const int64_t off = o * stride + (c0 + j) * p.inner + lo;
        const int64_t c = c0 + j;
        // Runs shorter than a page, the next outer index's run ahead of
        // use: one span of the block's runs per outer index, 2 or 3 input
        // streams, and each span a fresh start for the hardware prefetcher
        // (it follows addresses within a page). Measured, 2 threads, f32,
        // sums phase: 64x2048x7x7 2.52 -> 0.85 ms, 128x2048x7x7 5.3 -> 2.5
        // ms, 64x1024x14x14 2.9 -> 2.5 ms; runs of a page or more, and
        // tensors within L3, unchanged.
        if (short_runs && o + 1 < o1) {
          prefetch_span(dy + off + stride, run_bytes);
          prefetch_span(x + off + stride, run_bytes);
          if constexpr (from_y(M)) prefetch_span(mk.y + off + stride, run_bytes);
        }
        if constexpr (from_x(M)) {
          if (mk.lo) {
            add_gradients<M, true>(dy + off, x + off, hi - lo, static_cast<double>(mean[c]),
                                   ua[j], ub[j], static_cast<const T*>(nullptr), mk.lo[c],
                                   mk.hi[c], Param<T>(0));
            continue;
          }
        }
        add_gradients<M>(dy + off, x + off, hi - lo, static_cast<double>(mean[c]),
                         ua[j], ub[j],
                         from_y(M) ? mk.y + off : nullptr,
                         from_x(M) ? mk.fm[c] : Param<T>(0),
                         from_x(M) ? mk.fs[c] : Param<T>(0),
                         from_x(M) ? mk.fb[c] : Param<T>(0));
      }
    }
    for (int64_t j = 0; j < cw; ++j) {
      out[j].g += ua[j].total();
      out[j].gx += ub[j].total();
    }
  }
}

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
