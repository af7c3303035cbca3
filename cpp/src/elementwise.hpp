// The elementwise passes and the sweep that drives them over a tensor.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "plan.hpp"
#include "mask.hpp"
#include "simd.hpp"
#include "threading.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {

// Bytes of per-channel coefficients a sweep keeps on the stack.
constexpr int64_t kCoefBytes = 32 * 1024;
// Rows of wide channels-last tensors are swept in tiles of at least this
// size and this many rows (so that refilling the coefficients of each block
// of channels per tile costs little).
constexpr int64_t kSweepTileBytes = 256 * 1024;
constexpr int64_t kSweepTileRows = 128;
// Runs at least this long are visited one by one (coefficients per run).
constexpr int64_t kLongRun = 256;
// Maps in AVX-512 registers, 16 values at a time (load16, store16,
// each16): the half types' plain formulas (Map::in_registers; else float16
// staged, bfloat16 converted in the loop) and the fused backward's dx map
// in float32 and the half types (DxMaskOp::in_registers).
#if defined(BNORM_HAVE_F16C) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__)
#define BNORM_REGISTER_MAPS 1
#else
#define BNORM_REGISTER_MAPS 0
#endif

#if BNORM_REGISTER_MAPS
// 16 values of T (float, or a half type widened to float) from p, the lanes
// past m zero when kTail (a masked load); and 16 floats stored into p (a
// half type narrowed as its codec rounds: float16 by vcvtps2ph to nearest
// even, bfloat16 by BFloat16Codec's integer rounding), only the lanes of m
// when kTail (a masked store). Whole vectors use plain loads and stores: a
// masked store, even of all lanes, made the channels-last maps 1.3-2x
// slower on this AMD CPU.
template <class T, bool kTail>
inline __m512 load16(const T* p, __mmask16 m) {
  if constexpr (std::is_same_v<T, float>) {
    if constexpr (kTail) return _mm512_maskz_loadu_ps(m, p);
    else return _mm512_loadu_ps(p);
  } else {
    const uint16_t* h = &p->bits;
    __m256i v;
    if constexpr (kTail) v = _mm256_maskz_loadu_epi16(m, h);
    else v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h));
    // (the all-lanes masked conversion: the same instruction, without the
    // plain form's uninitialized operand that GCC 12 warns about)
    if constexpr (std::is_same_v<T, Half>) return _mm512_maskz_cvtph_ps(0xFFFF, v);
    else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
}

template <class T, bool kTail>
inline void store16(T* p, __m512 r, __mmask16 m) {
  if constexpr (std::is_same_v<T, float>) {
    if constexpr (kTail) _mm512_mask_storeu_ps(p, m, r);
    else _mm512_storeu_ps(p, r);
    return;
  } else {
    __m256i y;
    if constexpr (std::is_same_v<T, Half>) {
      y = _mm512_maskz_cvtps_ph(0xFFFF, r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      // BFloat16Codec::from_float in integer lanes: round to nearest even,
      // a NaN made quiet with its upper payload bits
      const __m512i u = _mm512_castps_si512(r);
      const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      const __m512i rounded = _mm512_srli_epi32(
          _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(
          _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
      const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
      y = _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
    }
    uint16_t* h = &p->bits;
    if constexpr (kTail) _mm256_mask_storeu_epi16(h, m, y);
    else _mm256_storeu_si256(reinterpret_cast<__m256i*>(h), y);
  }
}

// Values [0, n) 16 at a time, the last < 16 under a mask: vec(j, m, tail)
// with tail a std::bool_constant (true for the masked last vector).
template <class V>
inline void each16(int64_t n, const V& vec) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) vec(j, __mmask16(0xFFFF), std::false_type());
  if (j < n) vec(j, static_cast<__mmask16>((1u << (n - j)) - 1), std::true_type());
}
#endif
// The per-channel coefficients of a run or a row: k(q, i) is the q-th
// coefficient of index i's channel, and k.vec(q, i, m) (float
// coefficients, the AVX-512 copy) the same as 16 floats k(q, i .. i + 16)
// in the lanes of m.
template <class P, int K>
struct RunCoefs {  // one channel's: the same for every index
  P kv[K];
  P operator()(int q, int64_t) const { return kv[q]; }
#if BNORM_REGISTER_MAPS
  __m512 vec(int q, int64_t, __mmask16) const { return _mm512_set1_ps(kv[q]); }
#endif
};
template <class P>
struct RowCoefs {  // a row's: index i is channel i
  P* const* c;
  P operator()(int q, int64_t i) const { return c[q][i]; }
#if BNORM_REGISTER_MAPS
  __m512 vec(int q, int64_t i, __mmask16 m) const { return _mm512_maskz_loadu_ps(m, c[q] + i); }
#endif
};

// Streaming stores pay off on long contiguous runs (or wide rows) only;
// measured here, they slow down short ones, which therefore store normally.
constexpr int64_t kStreamMinRun = 256;

// A one-output elementwise map: out[i] = F::value(in0[i], in1[i], k), with
// k(q) the q-th of F::K coefficients of i's channel. F gives the formula
// once; Map runs it over a planar run (one channel), a row of channels, or
// four rows at once, in every form the sweep asks for:
//  - plain loops in T (float, double), with streaming stores for large
//    outputs (simd.hpp);
//  - half-precision data in the AVX-512 copy, plain formulas: 16 values at
//    a time in registers (in_registers);
//  - other float16 data with F16C: runs of up to kStage values widened to
//    float on the stack (simd.hpp), the formula in float, the results
//    narrowed back;
//  - other half-precision data, and F::kSimple (the fused epilogues) in
//    float and double: values converted to P = Param<T> (float) by ld/st,
//    arithmetic in P, plain stores.
// Each value is computed from index i's inputs alone, so the loop form
// never changes a result.
template <class F, class T>
struct Map {
  static constexpr int K = F::K;
  static constexpr int kArrays = F::N + 1;  // tensors read and written
  using P = Param<T>;
  const T* in0;
  const T* in1;  // F::N == 2 only
  T* out;
  bool stream;  // non-temporal stores for out (plain loops only)

  static constexpr bool kConverted = kIsHalf<T> || F::kSimple;
  // Half with F16C: through float buffers (one instruction per vector each
  // way); bfloat16's conversions are a shift and a rounding add, cheaper in
  // the loop itself.
#if defined(BNORM_HAVE_F16C)
  static constexpr bool kStaged = std::is_same_v<T, Half>;
#else
  static constexpr bool kStaged = false;
#endif

  void run(int64_t off, int64_t n, P* const* c, int64_t j) const {
    P kv[K];
    for (int q = 0; q < K; ++q) kv[q] = c[q][j];
    const auto k = [&](int q) { return kv[q]; };
    const T* a = in0 + off;
    const T* b = F::N > 1 ? in1 + off : nullptr;
    T* d = out + off;
#if BNORM_REGISTER_MAPS
    if constexpr (kIsHalf<T> && !F::kSimple) {
      RunCoefs<P, K> rk;
      for (int q = 0; q < K; ++q) rk.kv[q] = kv[q];
      in_registers(a, b, d, n, rk);
      return;
    }
#endif
    if constexpr (kStaged) {
      staged(a, b, d, n, [&](int64_t) { return k; });
    } else if constexpr (kConverted) {
      each(d, n, [&](int64_t i) { st(d, i, F::value(ld(a, i), F::N > 1 ? ld(b, i) : P(0), k)); });
    } else {
#ifdef BNORM_HAVE_STREAM
      if (stream && n * int64_t(sizeof(T)) >= kStreamMinRun) {
        stream_out(d, n,
                   [&](int64_t i) {
                     return F::value(sload(a + i), F::N > 1 ? sload(b + i) : sload(a + i), k);
                   },
                   [&](int64_t i) { return F::value(a[i], F::N > 1 ? b[i] : T(0), k); });
        return;
      }
#endif
      each(d, n, [&](int64_t i) { d[i] = F::value(a[i], F::N > 1 ? b[i] : T(0), k); });
    }
  }

  void row(int64_t off, int64_t cw, P* const* c) const {
    const T* a = in0 + off;
    const T* b = F::N > 1 ? in1 + off : nullptr;
    T* d = out + off;
#if BNORM_REGISTER_MAPS
    if constexpr (kIsHalf<T> && !F::kSimple) {
      in_registers(a, b, d, cw, RowCoefs<P>{c});
      return;
    }
#endif
    if constexpr (kStaged) {
      staged(a, b, d, cw, [&](int64_t s0) {
        return [c, s0](int q, int64_t i) { return c[q][s0 + i]; };
      });
    } else if constexpr (kConverted) {
      each(d, cw, [&](int64_t j) {
        st(d, j, F::value(ld(a, j), F::N > 1 ? ld(b, j) : P(0), [&](int q) { return c[q][j]; }));
      });
    } else {
#ifdef BNORM_HAVE_STREAM
      if (F::kStreamRows && stream && cw * int64_t(sizeof(T)) >= kStreamMinRun) {
        stream_out(d, cw,
                   [&](int64_t j) {
                     return F::value(sload(a + j), F::N > 1 ? sload(b + j) : sload(a + j),
                                     [&](int q) { return sload(c[q] + j); });
                   },
                   [&](int64_t j) {
                     return F::value(a[j], F::N > 1 ? b[j] : T(0), [&](int q) { return c[q][j]; });
                   });
        return;
      }
#endif
      each(d, cw, [&](int64_t j) {
        d[j] = F::value(a[j], F::N > 1 ? b[j] : T(0), [&](int q) { return c[q][j]; });
      });
    }
  }

#if BNORM_REGISTER_MAPS
  // Half-precision values [0, n) of a, b into d 16 at a time in registers
  // (each16): widened, the formula in float, narrowed as the codec rounds.
  // float16: the same bits as staged(), without its three passes over stack
  // buffers, which were 42% of a float16 training forward of 32x64x56x56
  // NCHW. bfloat16: the same bits as the converted loop, measured 1.0-1.6x
  // faster than it (2 threads: inference 32x256x14x14 NCHW 1.63x,
  // 8x112x112x32 NHWC 1.27x, training forward 1.0-1.2x). k: RunCoefs or
  // RowCoefs. Each vector's loads come before its store, so d may be a or
  // b.
  template <class Coef>
  static void in_registers(const T* a, const T* b, T* d, int64_t n, const Coef& k) {
    each16(n, [&](int64_t j, __mmask16 m, auto tail) BNORM_INLINE_LAMBDA {
      constexpr bool kTail = decltype(tail)::value;
      const __m512 x = load16<T, kTail>(a + j, m);
      __m512 z = _mm512_setzero_ps();
      if constexpr (F::N > 1) z = load16<T, kTail>(b + j, m);
      store16<T, kTail>(d + j, F::value(x, z, [&](int q) { return k.vec(q, j, m); }), m);
    });
  }
#endif

  // Half-precision values [0, n) of a, b into d, kStage at a time through
  // float buffers. coefs(s0) gives the coefficients of the stage starting
  // at s0: one set for a run (k(q)), or per value for a row (k(q, i)).
  static constexpr int64_t kStage = 256;
  template <class Coefs>
  static void staged(const T* a, const T* b, T* d, int64_t n, const Coefs& coefs) {
    alignas(64) float fa[kStage], fb[kStage], fd[kStage];  // (no peel in each())
    for (int64_t s0 = 0; s0 < n; s0 += kStage) {
      const int64_t m = std::min(kStage, n - s0);
      widen(a + s0, fa, m);
      if (F::N > 1) widen(b + s0, fb, m);
      const auto k = coefs(s0);
      each(fd, m, [&](int64_t i) {
        const float bi = F::N > 1 ? fb[i] : 0.0f;
        if constexpr (std::is_invocable_v<decltype(k), int, int64_t>)
          fd[i] = F::value(fa[i], bi, [&](int q) { return k(q, i); });
        else
          fd[i] = F::value(fa[i], bi, k);
      });
      narrow(fd, d + s0, m);
    }
  }

  // Four rows of stride ld at once, loading the coefficients once; false
  // where the form does not apply (then the sweep takes row by row).
  bool row4(int64_t off, int64_t ld, int64_t cw, P* const* c) const {
    if constexpr (kConverted) {
      (void)off, (void)ld, (void)cw, (void)c;
      return false;
    } else {
      if (stream && cw * int64_t(sizeof(T)) >= kStreamMinRun) return false;
      // Rows of 256 bytes up to a 4 KiB page go one at a time: four of them
      // share a page, which this loop would visit out of order, and the
      // hardware prefetchers follow addresses page by page (as
      // rows_per_sweep() in reduce_rows.hpp). Four rows of under 256 bytes
      // are a few neighbouring lines, and one row at a time cost more in
      // loop overhead than it saved. Measured with compare_libs, float32,
      // same bits, channels-last: 32x14x14x256 inference 1.18-1.55x and
      // training forward 1.23-1.42x on 2 threads, 1.47x and 1.40x on 1;
      // 32x56x56x64 1.0-1.84x and 0.96-1.40x on 2 threads, 1.61x and
      // 1.39x on 1; 8x112x112x32 0.80x and 0.92x until rows under 256
      // bytes kept the four-row form, 0.95-1.04x since.
      const int64_t row_bytes = ld * int64_t(sizeof(T));
      if (row_bytes >= 256 && row_bytes < kPageBytes) return false;
      const T* a = in0 + off;
      const T* b = F::N > 1 ? in1 + off : nullptr;
      T* d = out + off;
      each(d, cw, [&](int64_t j) {
        // All loads before any store: when ld spans a multiple of 4 KiB and
        // out sits at an input's offset within a page, a load after a store
        // to the same page offset waits for it (4K aliasing).
        const T a0 = a[j], a1 = a[j + ld], a2 = a[j + 2 * ld], a3 = a[j + 3 * ld];
        T b0 = 0, b1 = 0, b2 = 0, b3 = 0;
        if (F::N > 1) b0 = b[j], b1 = b[j + ld], b2 = b[j + 2 * ld], b3 = b[j + 3 * ld];
        T kv[K];
        for (int q = 0; q < K; ++q) kv[q] = c[q][j];
        const auto k = [&](int q) { return kv[q]; };
        d[j] = F::value(a0, b0, k);
        d[j + ld] = F::value(a1, b1, k);
        d[j + 2 * ld] = F::value(a2, b2, k);
        d[j + 3 * ld] = F::value(a3, b3, k);
      });
      return true;
    }
  }
};

// What Map needs to know of a formula besides its value: K coefficients, N
// inputs, whether it takes the converted (plain-store) loops whatever the
// type, whether rows of a large output stream.
template <int K_, int N_, bool kSimple_, bool kStreamRows_>
struct FormulaShape {
  static constexpr int K = K_;
  static constexpr int N = N_;
  static constexpr bool kSimple = kSimple_;
  static constexpr bool kStreamRows = kStreamRows_;
};

// Normalization: y = (x - m) * s + b, per channel. m is the mean rounded to
// T; the rounding error e = mean - m is folded into b = beta - e * s (in
// double), which keeps x - mean accurate in float even for data far from
// zero (offset >> std) at the cost of three operations per value.
//
// Fused forms (kRes, kAct): y = act((x - m) * s + b + z), z the residual
// input; act is none (kAct 0), relu(v) = v < 0 ? 0 : v (1) or relu6(v) =
// min(relu(v), 6) (2): kernels.hpp's FusedAct codes. Each keeps a NaN a NaN.
// (in0 = x, in1 = z.)
template <bool kRes, int kAct>
struct AffineFormula : FormulaShape<3, kRes ? 2 : 1, kRes || kAct != 0, true> {  // m, s, b
  template <class V, class C>
  static V value(V x, V z, const C& k) {
    V v = (x - k(0)) * k(1) + k(2);
    // (a NaN residual's payload wins over a NaN v's: with two NaN operands
    // an add returns the one the compiler put first, which the instruction-
    // set copies need not share; with one NaN, that one)
    if constexpr (kRes) v = z != z ? z : v + z;
    if constexpr (kAct != 0) v = v < V(0) ? V(0) : v;
    if constexpr (kAct == 2) v = v > V(6) ? V(6) : v;
    (void)z;
    return v;
  }
};
template <class T, bool kRes = false, int kAct = 0>
using AffineOp = Map<AffineFormula<kRes, kAct>, T>;

// Backward, training statistics: dx = (g * k - r) - (x - mean) * q.
// (in0 = dy, in1 = x.)
struct DxFormula : FormulaShape<4, 2, false, false> {  // k, r, mean, q
  template <class V, class C>
  static V value(V g, V x, const C& c) {
    return (g * c(0) - c(1)) - (x - c(2)) * c(3);
  }
};
template <class T>
using DxOp = Map<DxFormula, T>;

// Backward, frozen statistics: dx = g * k. (in0 = dy.)
struct ScaleFormula : FormulaShape<1, 1, false, false> {  // k
  template <class V, class C>
  static V value(V g, V, const C& c) {
    return g * c(0);
  }
};
template <class T>
using ScaleOp = Map<ScaleFormula, T>;

// run, row and row4 for the sweep, of a map written as one
// span(off, n, k), k(q, i) the q-th coefficient of index i's channel; no
// four-row form.
template <class Derived, class P, int K>
struct SpanMap {
  void run(int64_t off, int64_t n, P* const* c, int64_t j) const {
    RunCoefs<P, K> k;
    for (int q = 0; q < K; ++q) k.kv[q] = c[q][j];
    static_cast<const Derived*>(this)->span(off, n, k);
  }
  void row(int64_t off, int64_t cw, P* const* c) const {
    static_cast<const Derived*>(this)->span(off, cw, RowCoefs<P>{c});
  }
  bool row4(int64_t, int64_t, int64_t, P* const*) const { return false; }
};

// Backward fused with a ReLU (and a residual input): g = dy where the mask M
// is open (mask.hpp), else 0; dx = (g * k - r) - (x - mean) * q, or g * k
// with frozen statistics; the residual's gradient dres = g when kRes.
// Coefficients: k, r, mean, q, then fm, fs, fb (the forward's, for kMaskX),
// or, when `ranged`, lo and hi in place of fm and fs: each channel's
// interval of x where the mask is open (open_interval), which decides as
// the formula does with one or two comparisons.
template <class T, int M, bool kFrozen, bool kRes>
struct DxMaskOp : SpanMap<DxMaskOp<T, M, kFrozen, kRes>, Param<T>, from_x(M) ? 7 : 4> {
  static constexpr int K = from_x(M) ? 7 : 4;
  // dy, x, dx (y, dres)
  static constexpr int kArrays = 3 + from_y(M) + kRes;
  using P = Param<T>;
  const T* dy;
  const T* x;
  const T* y;  // the forward's output (kMaskY)
  T* dx;       // may be null (only dres wanted)
  T* dres;
  bool ranged = false;  // (kMaskX) coefficients 4 and 5 are the intervals

  // the mask exactly as the reductions decide it (mask.hpp, masked)
  P gate(P g, P xv, P yv, P m, P s, P b) const {
    if (from_y(M)) return mask_open<M>(static_cast<double>(yv)) ? g : P(0);
    if (from_x(M) && ranged) return m <= xv && xv <= s ? g : P(0);  // (m, s: lo, hi)
    if (from_x(M))
      return mask_open<M>((static_cast<double>(xv) - static_cast<double>(m)) *
                              static_cast<double>(s) + static_cast<double>(b)) ? g : P(0);
    return g;
  }
  // n values from off, k(q, i) the q-th coefficient of index i's channel.
  template <class Coef>
  void span(int64_t off, int64_t n, const Coef& k) const {
    const T* g = dy + off;
    const T* xs = x + off;
    const T* ys = from_y(M) ? y + off : nullptr;
    T* d = dx ? dx + off : nullptr;
    T* e = kRes ? dres + off : nullptr;
#if BNORM_REGISTER_MAPS
    if constexpr (kIsHalf<T> || std::is_same_v<T, float>) {
      if (from_x(M) && ranged) in_registers<true>(g, xs, ys, d, e, n, k);
      else in_registers<false>(g, xs, ys, d, e, n, k);
      return;
    }
#endif
    const auto open = [&](int64_t i, P xv) {
      return gate(ld(g, i), xv, from_y(M) ? ld(ys, i) : P(0), from_x(M) ? k(4, i) : P(0),
                  from_x(M) ? k(5, i) : P(0), from_x(M) ? k(6, i) : P(0));
    };
    if (d) {
      each(d, n, [&](int64_t i) {
        // every load before the first store: dres may be x (or dy, or y)
        const P xv = ld(xs, i);
        const P gi = open(i, xv);
        if (kRes) st(e, i, gi);
        st(d, i, kFrozen ? gi * k(0, i) : (gi * k(0, i) - k(1, i)) - (xv - k(2, i)) * k(3, i));
      });
    } else {
      each(e, n, [&](int64_t i) { st(e, i, open(i, ld(xs, i))); });
    }
  }

#if BNORM_REGISTER_MAPS
  // span() for float and half-precision data, 16 values at a time
  // (each16), the same bits: the mask from y compared in float (exact, as
  // gate's double holds y exactly), from x with the pre-activation in
  // double as gate() forms it, the rest in float. (GCC 12 leaves gate's
  // select scalar: the plain loop measured 2-4x slower than the unmasked
  // backward in float32 and 3x in float16.)
  template <bool kRanged, class Coef>
  static void in_registers(const T* g, const T* xs, const T* ys, T* d, T* e, int64_t n,
                           const Coef& k) {
    each16(n, [&](int64_t j, __mmask16 m, auto tail) BNORM_INLINE_LAMBDA {
      constexpr bool kTail = decltype(tail)::value;
      const __m512 xv = load16<T, kTail>(xs + j, m);
      __mmask16 open = 0xFFFF;
      if constexpr (from_y(M)) {
        open = open_lanes<M>(load16<T, kTail>(ys + j, m));
      } else if constexpr (from_x(M) && kRanged) {
        open = _mm512_cmp_ps_mask(k.vec(4, j, m), xv, _CMP_LE_OQ) &
               _mm512_cmp_ps_mask(xv, k.vec(5, j, m), _CMP_LE_OQ);
      } else if constexpr (from_x(M)) {
        // the pre-activation in double, 8 lanes at a time, as gate() forms it
        const __m512 fm = k.vec(4, j, m), fs = k.vec(5, j, m), fb = k.vec(6, j, m);
        const auto half_open = [](__m256 xh, __m256 mh, __m256 sh, __m256 bh) {
          return open_lanes<M>(_mm512_add_pd(
              _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtps_pd(xh), _mm512_cvtps_pd(mh)),
                            _mm512_cvtps_pd(sh)),
              _mm512_cvtps_pd(bh)));
        };
        const __mmask8 lo = half_open(_mm512_castps512_ps256(xv), _mm512_castps512_ps256(fm),
                                      _mm512_castps512_ps256(fs), _mm512_castps512_ps256(fb));
        const __mmask8 hi = half_open(
            _mm512_extractf32x8_ps(xv, 1), _mm512_extractf32x8_ps(fm, 1),
            _mm512_extractf32x8_ps(fs, 1), _mm512_extractf32x8_ps(fb, 1));
        open = static_cast<__mmask16>(lo | (unsigned(hi) << 8));
      }
      const __m512 gi = _mm512_maskz_mov_ps(open, load16<T, kTail>(g + j, m));
      if constexpr (kRes) store16<T, kTail>(e + j, gi, m);
      if (d) {
        const __m512 k0 = k.vec(0, j, m);
        __m512 v;
        if constexpr (kFrozen) v = gi * k0;
        else v = (gi * k0 - k.vec(1, j, m)) - (xv - k.vec(2, j, m)) * k.vec(3, j, m);
        store16<T, kTail>(d + j, v, m);
      }
    });
  }
#endif
};

// Coefficients read from K precomputed arrays of `channels` values.
template <class T, int K>
struct StoredCoefs {
  const T* const* arrays;
  void operator()(int64_t c0, int64_t cw, T* const* dst) const {
    for (int i = 0; i < K; ++i) {
      const T* src = arrays[i] + c0;
      T* d = dst[i];
      BNORM_SIMD
      for (int64_t j = 0; j < cw; ++j) d[j] = src[j];
    }
  }
};

// Whether an output of `bytes` should bypass the caches: only when it is
// too large for the last-level cache to hand it on to the next operation.
inline bool stream_output(int64_t bytes) {
#ifdef BNORM_HAVE_STREAM
  return 2 * bytes >= l3_cache_bytes();
#else
  (void)bytes;
  return false;
#endif
}

// Rows [r0, r1) of channels [c0, c0 + cw), four at a time where possible.
template <class Op, class P>
inline void op_rows(const Op& op, int64_t r0, int64_t r1, int64_t C, int64_t c0,
                    int64_t cw, P* const* k) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4)
    if (!op.row4(r * C + c0, C, cw, k)) break;
  for (; r < r1; ++r) op.row(r * C + c0, cw, k);
}

// Thread tid's share of an elementwise pass over the whole tensor.
// fill(c0, cw, dst) writes the K coefficient arrays of channels [c0, c0+cw).
template <class T, class Op, class Fill>
void sweep(const Plan& p, const Op& op, const Fill& fill, int tid, int nt) {
  constexpr int K = Op::K;
  using P = Param<T>;
  constexpr int64_t B = kCoefBytes / (K * int64_t(sizeof(P)));
  P buf[K][B];
  P* k[K];
  for (int i = 0; i < K; ++i) k[i] = buf[i];
  const int64_t C = p.channels;
  if (p.rows) {
    // Tiles of rows, so that wide rows are still read front to back while
    // the coefficients of one block of channels are refilled per tile only.
    int64_t r0, r1;
    share(p.outer, tid, nt, &r0, &r1);
    const int64_t tile =
        C <= B ? r1 - r0
               : std::max<int64_t>(kSweepTileRows,
                                   kSweepTileBytes / (C * int64_t(sizeof(T))));
    for (int64_t t0 = r0; t0 < r1; t0 += tile) {
      const int64_t t1 = std::min(r1, t0 + tile);
      for (int64_t c0 = 0; c0 < C; c0 += B) {
        const int64_t cw = std::min(B, C - c0);
        fill(c0, cw, k);
        op_rows(op, t0, t1, C, c0, cw, k);
      }
    }
  } else if (p.inner >= kLongRun || p.outer < 2 * nt) {
    int64_t t0, t1;
    share(p.outer * C, tid, nt, &t0, &t1);
    for (int64_t t = t0; t < t1; ++t) {
      fill(t % C, 1, k);
      op.run(t * p.inner, p.inner, k, 0);
    }
  } else {
    int64_t o0, o1;
    share(p.outer, tid, nt, &o0, &o1);
    for (int64_t c0 = 0; c0 < C; c0 += B) {
      const int64_t cw = std::min(B, C - c0);
      fill(c0, cw, k);
      for (int64_t o = o0; o < o1; ++o)
        for (int64_t j = 0; j < cw; ++j)
          op.run((o * C + c0 + j) * p.inner, p.inner, k, j);
    }
  }
  stream_fence();
}

// The elementwise pass over channels [c0, c0 + cw) only (their data is still
// in cache); planar layout (Plan::whole_block), cw <= kChannelBlock.
template <class T, class Op, class Fill>
void sweep_channels(const Plan& p, const Op& op, const Fill& fill, int64_t c0,
                    int64_t cw) {
  constexpr int K = Op::K;
  using P = Param<T>;
  P buf[K][kChannelBlock];
  P* k[K];
  for (int i = 0; i < K; ++i) k[i] = buf[i];
  fill(c0, cw, k);
  const int64_t C = p.channels;
  for (int64_t o = 0; o < p.outer; ++o)
    for (int64_t j = 0; j < cw; ++j)
      op.run((o * C + c0 + j) * p.inner, p.inner, k, j);
  stream_fence();
}

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
