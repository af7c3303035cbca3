// The reducers of the rows layout: channels-last tensors (NHWC, NDHWC) and
// (N, C) -- every tensor whose channels are contiguous (inner == 1).
//
//   rows_moments: a group's (count, mean, M2) per channel (training
//                 statistics);
//   rows_sums:    a group's sum(g) and sum(g * (x - mean)) per channel (the
//                 backward's sums), g = dy behind an optional ReLU mask.
//
// A group (plan.hpp) is a range of rows; its channels [c0, c0 + cw) are one
// lane or, when the groups are spread over threads, all channels. The loops
// run across channels (vectorized) and down the rows, each channel's rows in
// row order, so the sums do not depend on where a vector starts or on cw.
// `scratch` holds 3 * cw doubles.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "mask.hpp"
#include "plan.hpp"
#include "simd.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {

// Channels of a float16 row widened at once (F16C copies).
constexpr int64_t kStageChannels = 256;

// Rows a rows loop prefetches ahead of itself.
constexpr int64_t kRowsAhead = 4;

// Rows the reductions take per sweep over their accumulators: 4 (the
// accumulators loaded and stored once per four rows) when a row of the
// tensor spans at least a 4 KiB page, 1 when rows are shorter. The hardware
// prefetchers follow the addresses within each page, and four short rows
// swept channel by channel visit one page out of order. Measured against
// four rows always (compare_libs, float32, 1 and 2 threads, same bits):
// (32, 56, 56, 128) channels-last training forward 1.43-1.46x, backward
// 1.32-1.61x; (32, 14, 14, 256) backward 1.0-1.2x; others within the
// noise. Either way each channel's rows are added in row order: the same
// sums, bit for bit.
// Half-precision rows are widened four at a time into a stage whatever
// their length (one row per stage measured 0.80-0.90x on float16).
template <class T>
constexpr int rows_per_sweep(int64_t channels) {
  return sizeof(T) < 4 || channels * int64_t(sizeof(T)) >= kPageBytes ? 4 : 1;
}

// Rows layout with a few channels known at compile time: the per-channel
// accumulators s1[j], s2[j] live in registers for the whole loop over rows,
// where add(r, j, k[j], s1[j], s2[j]) adds row r's value of channel j (k: a
// per-channel constant, the shift or the mean). Same sums, in the same
// order, as the general loops.
template <int W, class K, class F>
inline void rows_fixed(int64_t rows, const K* k, double* s1, double* s2, const F& add) {
  double a1[W], a2[W];
  K kc[W];
  for (int j = 0; j < W; ++j) a1[j] = s1[j], a2[j] = s2[j], kc[j] = k[j];
  for (int64_t r = 0; r < rows; ++r) {
    BNORM_SIMD
    for (int j = 0; j < W; ++j) add(r, j, kc[j], a1[j], a2[j]);
  }
  for (int j = 0; j < W; ++j) s1[j] = a1[j], s2[j] = a2[j];
}

// rows_fixed for cw channels when cw is one of the widths it is built for;
// false otherwise (the caller takes the general loops).
template <class K, class F>
inline bool rows_small(int64_t cw, int64_t rows, const K* k, double* s1, double* s2,
                       const F& add) {
  switch (cw) {
    case 8: rows_fixed<8>(rows, k, s1, s2, add); return true;
    case 16: rows_fixed<16>(rows, k, s1, s2, add); return true;
    case 32: rows_fixed<32>(rows, k, s1, s2, add); return true;
    case 64: rows_fixed<64>(rows, k, s1, s2, add); return true;
    default: return false;
  }
}

// Vectors of channels the masked rows sums take over all rows at once.
constexpr int kWholeRowsVectors = 8;

// Rows layout with a ReLU mask M (GCC 12 does not vectorize a select whose
// mask comes from converted floats, so this is written with vector types):
// over `rows` rows of stride ld and channels [0, cw),
//   a[j] += g;  b[j] += g * (x - mu[j]),  g = dy where the mask is open.
// Rows are taken in chunks of rows_per_sweep(ld) (1 or 4), each chunk
// column block by column block with the accumulators in registers; per
// channel the rows are still added in order, so the sums are those of the
// one-row loops. (Chunks of 32 rows read 32 strided rows at once, more
// streams than the prefetchers follow: against them, 1.2-1.5x on (64, 7, 7,
// 2048) and 1.3-1.5x on (32, 14, 14, 256) float32, 1.0x on (256, 1024),
// measured with compare_libs, 2 threads.)
// With kRanged (kMaskX), fm and fs are the ends of each channel's interval
// of x where the mask is open (open_interval, mask.hpp) and fb is unused:
// the same decisions as the formula, with two comparisons.
template <int M, bool kRanged, class T>
inline void rows_gradients_masked(const T* g, const T* x, const T* y, int64_t rows,
                                  int64_t ld, int64_t cw, const double* mu,
                                  const Param<T>* fm, const Param<T>* fs,
                                  const Param<T>* fb, double* a, double* b) {
  // x - mean formed in Dev<T>, g * (x - mean) exact in double (simd.hpp), as
  // in the unmasked loops: a masked call and an unmasked one on the masked
  // gradient (the fused backward's streaming path) give the same bits
  using D = Dev<T>;
  // In the AVX-512 copy, 32 or 64 channels (4 or 8 vectors: one block) take
  // all rows in one chunk, the accumulators in registers throughout, as
  // rows_small keeps the unmasked sums' (a row per chunk reloaded 16
  // accumulators and the means for every row of 256 bytes). Other widths
  // keep the chunks: more than one block over all rows would read each row
  // once per block. In one process, alternating, same bits, 2 threads,
  // backward with ReLU from y / from x: float32 16x56x56x64 1.52x / 1.85x,
  // 8x112x112x32 1.92x / 2.11x, 4x56x56x64 1.90x / 2.45x (1 thread 1.63x /
  // 1.70x); float16 1.16-1.29x, bfloat16 1.10-1.19x.
#if defined(BNORM_VECTOR_TYPES) && defined(__AVX512F__)
  const bool whole = cw == kWholeRowsVectors * kVecLanes || cw == 4 * kVecLanes;
#else
  const bool whole = false;
#endif
  const int64_t chunk_rows = whole ? rows : rows_per_sweep<T>(ld);
  // a value's g behind the mask, as mask.hpp's masked() decides it
  using P = Param<T>;
  auto open = [&](double gv, int64_t o, int64_t j) {
    if constexpr (from_y(M))
      return masked<M>(gv, x[o], y[o], P(0), P(0), P(0));
    else
      return masked<M, kRanged>(gv, x[o], T(), fm[j], fs[j], kRanged ? P(0) : fb[j]);
  };
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t r1 = std::min(rows, r0 + chunk_rows);
    int64_t j = 0;
#ifdef BNORM_VECTOR_TYPES
    // NV vectors of channels at once: independent chains hide add latency
    auto block = [&](auto nv_tag) {
      constexpr int NV = decltype(nv_tag)::value;
      VecD va[NV], vb[NV], m[NV], cm[NV], cs[NV], cb[NV];
      VecF mf[NV];  // the means as floats (exact: saved float means) for D = float
#pragma GCC unroll 8
      for (int k = 0; k < NV; ++k) {
        const int64_t jk = j + k * kVecLanes;
        va[k] = load_lanes(a + jk);
        vb[k] = load_lanes(b + jk);
        m[k] = load_lanes(mu + jk);
        mf[k] = __builtin_convertvector(m[k], VecF);
        if constexpr (from_x(M)) {
          cm[k] = load_lanes(fm + jk);
          cs[k] = load_lanes(fs + jk);
          if constexpr (!kRanged) cb[k] = load_lanes(fb + jk);
        }
      }
      for (int64_t r = r0; r < r1; ++r) {
#pragma GCC unroll 8
        for (int k = 0; k < NV; ++k) {
          const int64_t o = r * ld + j + k * kVecLanes;
          const VecD xv = load_lanes(x + o);
          VecD gv = load_lanes(g + o);
          if constexpr (from_y(M))
            gv = gate_lanes<M>(gv, load_lanes(y + o));
          else if constexpr (kRanged)
            gv = ((xv >= cm[k]) & (xv <= cs[k])) ? gv : VecD{};
          else
            gv = gate_lanes<M>(gv, (xv - cm[k]) * cs[k] + cb[k]);
          va[k] += gv;
          if constexpr (std::is_same_v<D, double>)
            vb[k] += gv * (xv - m[k]);
          else
            vb[k] = add_product<D>(vb[k], gv, widen_lanes(load_floats(x + o) - mf[k]));
        }
      }
#pragma GCC unroll 8
      for (int k = 0; k < NV; ++k) {
        std::memcpy(a + j + k * kVecLanes, &va[k], sizeof va[k]);
        std::memcpy(b + j + k * kVecLanes, &vb[k], sizeof vb[k]);
      }
      j += NV * kVecLanes;
    };
    if (whole && cw == kWholeRowsVectors * kVecLanes)
      block(std::integral_constant<int, kWholeRowsVectors>());
    while (j + 4 * kVecLanes <= cw) block(std::integral_constant<int, 4>());
    while (j + kVecLanes <= cw) block(std::integral_constant<int, 1>());
#endif
    for (; j < cw; ++j)
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t o = r * ld + j;
        const double gj = open(static_cast<double>(g[o]), o, j);
        a[j] += gj;
        b[j] = add_product<D>(b[j], gj, deviation(x[o], static_cast<D>(mu[j])));
      }
  }
}

// Rows unit u of the channels [c0, c0 + cw), merged into acc[0..cw): one
// pass of deviations from the tile's first row, each formed in StatDev<T>
// and added in double (simd.hpp).
// `scratch` holds 3 * cw doubles; cw may be any number of channels.
template <class T>
inline void rows_unit_moments(const Plan& p, const T* x, int64_t c0, int64_t cw,
                       int64_t u, Moments* acc, double* scratch) {
  using D = StatDev<T>;
  int64_t r0, r1;
  p.rows_unit(u, &r0, &r1);
  const int64_t C = p.channels;
  const double n = static_cast<double>(r1 - r0);
  D* shift = reinterpret_cast<D*>(scratch);  // (cw values of D in cw doubles' room)
  double* s1 = scratch + cw;
  double* s2 = scratch + 2 * cw;
  const T* first = x + r0 * C + c0;
  for (int64_t j = 0; j < cw; ++j) {
    shift[j] = static_cast<D>(first[j]);
    s1[j] = s2[j] = 0;
  }
  // K rows per sweep over the accumulators (rows_per_sweep), or a few
  // channels kept in registers throughout (rows_small); either way each
  // channel's rows are added in row order.
  const auto one = [&](int64_t row, int j, D sh, double& a1, double& a2) BNORM_INLINE_LAMBDA {
    const double d = deviation(first[row * C + j], sh);
    a1 += d;
    a2 = add_product<D>(a2, d, d);
  };
  int64_t r = r0;
  if (rows_small(cw, r1 - r0, shift, s1, s2, one)) r = r1;
  // K rows (q: the first one's channels from j0 on, ld: the row stride, w
  // channels) into the sums
  const auto add_rows = [&](auto k_tag, const auto* q, int64_t ld, int64_t j0,
                            int64_t w) BNORM_INLINE_LAMBDA {
    constexpr int K = decltype(k_tag)::value;
    each(q, w, [&](int64_t j) BNORM_INLINE_LAMBDA {
      const D sh = shift[j0 + j];
      double a1 = s1[j0 + j], a2 = s2[j0 + j];
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) {
        const double d = deviation(q[k * ld + j], sh);
        a1 += d;
        a2 = add_product<D>(a2, d, d);
      }
      s1[j0 + j] = a1, s2[j0 + j] = a2;
    });
  };
  const auto sweep = [&](auto k_tag) BNORM_INLINE_LAMBDA {
    constexpr int K = decltype(k_tag)::value;
    for (; r + K <= r1; r += K) {
      const T* x0 = x + r * C + c0;
      if (K > 1 && r + K + kRowsAhead < p.outer)
        prefetch_span(x0 + (K + kRowsAhead) * C, cw * int64_t(sizeof(T)));
#if defined(BNORM_HAVE_F16C)
      if constexpr (std::is_same_v<T, Half>) {
        // float16 through F16C: the rows widened to floats (exact, the
        // codec's values), a stage of channels at a time, then the float
        // form of the same operations: the same bits, without the codec's
        // integer conversion in the vector loop
        alignas(64) float st[K][kStageChannels];
        for (int64_t b = 0; b < cw; b += kStageChannels) {
          const int64_t w = std::min(kStageChannels, cw - b);
          for (int k = 0; k < K; ++k) widen(x0 + k * C + b, st[k], w);
          add_rows(k_tag, st[0], kStageChannels, b, w);
        }
        continue;
      }
#endif
      add_rows(k_tag, x0, C, 0, cw);
    }
  };
  if (rows_per_sweep<T>(C) == 4) sweep(std::integral_constant<int, 4>());
  sweep(std::integral_constant<int, 1>());
  for (int64_t j = 0; j < cw; ++j)
    merge_into(acc[j], from_shifted(n, static_cast<double>(shift[j]), s1[j], s2[j]));
}

// Group g of the channels [c0, c0 + cw): out[j], from empty.
template <class T>
void rows_moments(const Plan& p, const T* x, int64_t c0, int64_t cw, int64_t g,
                  Moments* out, double* scratch) {
  int64_t u0, u1;
  p.group_range(g, &u0, &u1);
  for (int64_t j = 0; j < cw; ++j) out[j] = Moments();
  for (int64_t u = u0; u < u1; ++u) rows_unit_moments(p, x, c0, cw, u, out, scratch);
}

// Group g of the channels [c0, c0 + cw): out[j], from empty.
template <int M, class T>
void rows_sums(const Plan& p, const T* dy, const T* x, const Param<T>* mean,
               const MaskArgs<T>& mk, int64_t c0, int64_t cw, int64_t g, Sums* out,
               double* scratch) {
  int64_t u0, u1;
  p.group_range(g, &u0, &u1);
  const int64_t C = p.channels;
  // scratch: the means (as double for the masked loop, as Dev<T> for the
  // unmasked ones), then a and b
  double* a = scratch + cw;
  double* b = scratch + 2 * cw;
  for (int64_t j = 0; j < cw; ++j) a[j] = b[j] = 0;
  int64_t r0, r1, unused;
  p.rows_unit(u0, &r0, &unused);
  p.rows_unit(u1 - 1, &unused, &r1);
  // With a ReLU mask: its own vector loop. Otherwise rows_per_sweep rows
  // per sweep over the accumulators, or a few channels kept in registers
  // throughout; either way in row order.
  const int64_t o0 = r0 * C + c0;
  if constexpr (M != kNoMask) {
    double* mu = scratch;
    for (int64_t j = 0; j < cw; ++j) mu[j] = static_cast<double>(mean[c0 + j]);
    bool ranged = false;
    if constexpr (from_x(M)) {
      if (mk.lo) {
        rows_gradients_masked<M, true>(dy + o0, x + o0, static_cast<const T*>(nullptr),
                                       r1 - r0, C, cw, mu, mk.lo + c0, mk.hi + c0,
                                       static_cast<const Param<T>*>(nullptr), a, b);
        ranged = true;
      }
    }
    if (!ranged)
      rows_gradients_masked<M, false>(dy + o0, x + o0, from_y(M) ? mk.y + o0 : nullptr,
                                      r1 - r0, C, cw, mu, from_x(M) ? mk.fm + c0 : nullptr,
                                      from_x(M) ? mk.fs + c0 : nullptr,
                                      from_x(M) ? mk.fb + c0 : nullptr, a, b);
  } else {
    // x - mean formed in Dev<T> (the saved mean of float and half-precision
    // data is a float), g * (x - mean) exact in double (simd.hpp)
    using D = Dev<T>;
    D* m = reinterpret_cast<D*>(scratch);
    for (int64_t j = 0; j < cw; ++j) m[j] = static_cast<D>(mean[c0 + j]);
    const T* g_first = dy + o0;
    const T* x_first = x + o0;
    const auto gradient = [&](int64_t row, int j, D mj, double& sa, double& sb) BNORM_INLINE_LAMBDA {
      const double gj = static_cast<double>(g_first[row * C + j]);
      sa += gj;
      sb = add_product<D>(sb, gj, deviation(x_first[row * C + j], mj));
    };
    int64_t r = r0;
    if (rows_small(cw, r1 - r0, m, a, b, gradient)) r = r1;
    // K rows (gq, xq: the first one's dy and x from channel j0 on, ld:
    // their row stride, w channels) into the sums
    const auto add_rows = [&](auto k_tag, const auto* gq, const auto* xq, int64_t ld,
                              int64_t j0, int64_t w) BNORM_INLINE_LAMBDA {
      constexpr int K = decltype(k_tag)::value;
      each(xq, w, [&](int64_t j) BNORM_INLINE_LAMBDA {
        const D mj = m[j0 + j];
        double sa = a[j0 + j], sb = b[j0 + j];
#pragma GCC unroll 4
        for (int k = 0; k < K; ++k) {
          const double gj = static_cast<double>(gq[k * ld + j]);
          sa += gj;
          sb = add_product<D>(sb, gj, deviation(xq[k * ld + j], mj));
        }
        a[j0 + j] = sa, b[j0 + j] = sb;
      });
    };
    // (no software prefetch: as for the planar runs, add_gradients in
    // reduce_planar.hpp, it measured slower than the hardware prefetcher alone)
    const auto sweep = [&](auto k_tag) BNORM_INLINE_LAMBDA {
      constexpr int K = decltype(k_tag)::value;
      for (; r + K <= r1; r += K) {
        const T* g0 = dy + r * C + c0;
        const T* x0 = x + r * C + c0;
#if defined(BNORM_HAVE_F16C)
        if constexpr (std::is_same_v<T, Half>) {
          // float16 through F16C, staged as in rows_unit_moments: the same bits
          alignas(64) float sg[K][kStageChannels], sx[K][kStageChannels];
          for (int64_t c = 0; c < cw; c += kStageChannels) {
            const int64_t w = std::min(kStageChannels, cw - c);
            for (int k = 0; k < K; ++k) {
              widen(g0 + k * C + c, sg[k], w);
              widen(x0 + k * C + c, sx[k], w);
            }
            add_rows(k_tag, sg[0], sx[0], kStageChannels, c, w);
          }
          continue;
        }
#endif
        add_rows(k_tag, g0, x0, C, 0, cw);
      }
    };
    if (rows_per_sweep<T>(C) == 4) sweep(std::integral_constant<int, 4>());
    sweep(std::integral_constant<int, 1>());
  }
  for (int64_t j = 0; j < cw; ++j) out[j] = {a[j], b[j]};
}

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
