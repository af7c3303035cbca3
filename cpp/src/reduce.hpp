// Contiguous reductions in double precision with a fixed lane structure.
//
// Value i of a run is added to accumulator lane i % kLanes, and the lanes
// are combined in a fixed pairwise tree. Every instruction set computes
// exactly these sums -- the vector copies with GCC/Clang vector types, the
// scalar copy with plain loops -- so results are bitwise the same on every
// CPU (FMA contraction is off for the kernels, see cpp/CMakeLists.txt).
// kLanes independent chains also hide the latency of the adds.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "half.hpp"
#include "simd.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace bnorm {
namespace BNORM_ISA_NS {

constexpr int kLanes = 16;

struct Lanes {
  double v[kLanes];
  Lanes() {
    for (int k = 0; k < kLanes; ++k) v[k] = 0;
  }
  // Fixed pairwise tree: ((v0+v1)+(v2+v3)) + ...
  double total() const {
    double t[kLanes];
    for (int k = 0; k < kLanes; ++k) t[k] = v[k];
    for (int w = kLanes / 2; w >= 1; w /= 2)
      for (int k = 0; k < w; ++k) t[k] = t[2 * k] + t[2 * k + 1];
    return t[0];
  }
};

#if !defined(BNORM_ISA_SCALAR) && (defined(__GNUC__) || defined(__clang__))
#define BNORM_VECTOR_TYPES 1
// One hardware register of doubles; kLanes of them make kRegs registers,
// kept as separate variables so the compiler holds them in registers.
constexpr int kVecBytes = BNORM_VEC_BYTES;
constexpr int kVecLanes = kVecBytes / 8;
constexpr int kRegs = kLanes / kVecLanes;
typedef double VecD __attribute__((vector_size(kVecBytes)));
typedef float VecF __attribute__((vector_size(kVecBytes / 2)));

inline VecD load_lanes(const double* p) {
  VecD v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline VecD load_lanes(const float* p) {
  // The conversion is exact either way; GCC 12 builds the generic form for
  // AVX-512 out of two half-width conversions, an extract and an insert,
  // which made the planar reductions compute-bound. One instruction instead:
#if defined(__AVX512F__) && (defined(__x86_64__) || defined(_M_X64))
  // (the all-lanes masked form: the same instruction, without the plain
  // form's deliberately uninitialized operand that GCC 12 warns about)
  const __m512d d = _mm512_maskz_cvtps_pd(0xFF, _mm256_loadu_ps(p));
#elif defined(__AVX__) && (defined(__x86_64__) || defined(_M_X64))
  const __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(p));
#else
  VecF f;
  std::memcpy(&f, p, sizeof f);
  const VecD d = __builtin_convertvector(f, VecD);
#endif
  VecD v;
  std::memcpy(&v, &d, sizeof v);
  return v;
}

// Half-precision lanes: the conversions of half.hpp, lane by lane.
typedef uint16_t VecU16 __attribute__((vector_size(kVecBytes / 4)));
typedef uint32_t VecU32 __attribute__((vector_size(kVecBytes / 2)));
inline VecU32 load_u16(const uint16_t* p) {
  VecU16 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, VecU32);
}
inline VecF bits_to_floats(VecU32 u) {
  VecF f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline VecD load_lanes(const BFloat16* p) {
  return __builtin_convertvector(bits_to_floats(load_u16(&p->bits) << 16), VecD);
}
inline VecD load_lanes(const Half* p) {
  const VecU32 h = load_u16(&p->bits);
  const VecU32 em = (h & 0x7fffu) << 13;
  const VecU32 exp = em & (0x7c00u << 13);
  const VecU32 normal = em + (uint32_t(127 - 15) << 23);
  const VecU32 infnan = normal + (uint32_t(128 - 16) << 23);
  const VecF subf = bits_to_floats(normal + (1u << 23)) - bits_to_float(113u << 23);
  VecU32 sub;
  std::memcpy(&sub, &subf, sizeof sub);
  VecU32 o = exp == (0x7c00u << 13) ? infnan : normal;
  o = exp == 0u ? sub : o;
  return __builtin_convertvector(bits_to_floats(o | ((h & 0x8000u) << 16)), VecD);
}

struct Regs {
  VecD r[kRegs];
  explicit Regs(const Lanes& a) {
#pragma GCC unroll 16
    for (int k = 0; k < kRegs; ++k) std::memcpy(&r[k], a.v + k * kVecLanes, kVecBytes);
  }
  void store(Lanes& a) const {
#pragma GCC unroll 16
    for (int k = 0; k < kRegs; ++k) std::memcpy(a.v + k * kVecLanes, &r[k], kVecBytes);
  }
};
#endif

// The ReLU of a fused backward (BN followed by ReLU): which values' dy reach
// the batch norm. kNoMask: all; kMaskY: where the forward's output y > 0;
// kMaskX: where the pre-activation (x - m) * s + b > 0, recomputed in T from
// per-channel coefficients. A masked g is 0 (selected, not multiplied: a
// NaN dy where the ReLU was closed gives 0, as in PyTorch).
enum MaskKind { kNoMask = 0, kMaskY = 1, kMaskX = 2 };

// (kMaskX computes the pre-activation in double in every pass of a call, so
// the reductions and the dx pass always agree on the mask.)
template <int M, class T, class Q>
inline double masked(double g, T x, T y, Q m, Q s, Q b) {
  if (M == kMaskY) return static_cast<double>(y) > 0.0 ? g : 0.0;
  if (M == kMaskX)
    return (static_cast<double>(x) - static_cast<double>(m)) * static_cast<double>(s) +
                       static_cast<double>(b) > 0.0 ? g : 0.0;
  (void)x, (void)y, (void)m, (void)s, (void)b;
  return g;
}

#ifdef BNORM_VECTOR_TYPES
typedef long long VecL __attribute__((vector_size(kVecBytes)));
// g where the mask is open, 0 elsewhere; p points at kVecLanes values of
// y (kMaskY) or x (kMaskX), of type T.
template <int M, class T, class Q>
inline VecD masked(VecD g, const T* p, Q m, Q s, Q b) {
  if constexpr (M == kMaskY) {
    return load_lanes(p) > 0.0 ? g : VecD{};
  } else if constexpr (M == kMaskX) {
    const VecD pre = (load_lanes(p) - static_cast<double>(m)) * static_cast<double>(s) +
                     static_cast<double>(b);
    return pre > 0.0 ? g : VecD{};
  } else {
    (void)p, (void)m, (void)s, (void)b;
    return g;
  }
}
#endif

// Asks for the cache lines of p[i .. i + kLanes) ahead of use. Reading the
// next unit while computing on this one overlaps memory with arithmetic, and
// spares the hardware prefetcher a cold start on every short run.
template <class T>
inline void prefetch_lanes(const T* p, int64_t i) {
#if defined(__GNUC__) || defined(__clang__)
  if (p) {
    for (int64_t b = 0; b < kLanes * int64_t(sizeof(T)); b += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(p + i) + b, 0, 3);
  }
#else
  (void)p;
  (void)i;
#endif
}

// Asks for the cache lines of [p, p + bytes), e.g. a row some rows ahead.
inline void prefetch_span(const void* p, int64_t bytes) {
#if defined(__GNUC__) || defined(__clang__)
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, 3);
#else
  (void)p;
  (void)bytes;
#endif
}

// Rows a rows loop prefetches ahead of itself.
constexpr int64_t kRowsAhead = 4;

// d = x[i] - shift;  s1 += d;  s2 += d * d.  Prefetches pf[0 .. n) if given.
template <class T>
inline void add_deviations(const T* x, int64_t n, double shift, Lanes& s1,
                           Lanes& s2, const T* pf = nullptr) {
  int64_t i = 0;
#ifdef BNORM_VECTOR_TYPES
  Regs v1(s1), v2(s2);
  const VecD sh = VecD{} + shift;
  for (; i + kLanes <= n; i += kLanes) {
    prefetch_lanes(pf, i);
#pragma GCC unroll 16
    for (int k = 0; k < kRegs; ++k) {
      const VecD d = load_lanes(x + i + k * kVecLanes) - sh;
      v1.r[k] += d;
      v2.r[k] += d * d;
    }
  }
  v1.store(s1);
  v2.store(s2);
#else
  for (; i + kLanes <= n; i += kLanes) {
    prefetch_lanes(pf, i);
    for (int k = 0; k < kLanes; ++k) {
      const double d = static_cast<double>(x[i + k]) - shift;
      s1.v[k] += d;
      s2.v[k] += d * d;
    }
  }
#endif
  for (int k = 0; i + k < n; ++k) {
    const double d = static_cast<double>(x[i + k]) - shift;
    s1.v[k] += d;
    s2.v[k] += d * d;
  }
}

// a += g[i];  b += g[i] * (x[i] - mean), g[i] = dy[i] masked by M (y, or the
// channel's forward coefficients m, s, b). No software prefetch: with two
// input streams the hardware prefetcher keeps up, and prefetching the next
// unit's runs (as add_deviations does) made the planar backward reduction
// 20-25% slower on tensors larger than L2 (measured, 1 and 2 threads).
template <int M = kNoMask, class T>
inline void add_gradients(const T* g, const T* x, int64_t n, double mean,
                          Lanes& a, Lanes& b, const T* y = nullptr,
                          Param<T> fm = 0, Param<T> fs = 0, Param<T> fb = 0) {
  int64_t i = 0;
#ifdef BNORM_VECTOR_TYPES
  Regs va(a), vb(b);
  const VecD mu = VecD{} + mean;
  for (; i + kLanes <= n; i += kLanes) {
#pragma GCC unroll 16
    for (int k = 0; k < kRegs; ++k) {
      const int64_t o = i + k * kVecLanes;
      const VecD gi = masked<M>(load_lanes(g + o), M == kMaskY ? y + o : x + o, fm, fs, fb);
      va.r[k] += gi;
      vb.r[k] += gi * (load_lanes(x + o) - mu);
    }
  }
  va.store(a);
  vb.store(b);
#else
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double gi = masked<M>(static_cast<double>(g[i + k]), x[i + k],
                                  M == kMaskY ? y[i + k] : T(), fm, fs, fb);
      a.v[k] += gi;
      b.v[k] += gi * (static_cast<double>(x[i + k]) - mean);
    }
  }
#endif
  for (int k = 0; i + k < n; ++k) {
    const double gi = masked<M>(static_cast<double>(g[i + k]), x[i + k],
                                M == kMaskY ? y[i + k] : T(), fm, fs, fb);
    a.v[k] += gi;
    b.v[k] += gi * (static_cast<double>(x[i + k]) - mean);
  }
}

// Rows layout with a few channels known at compile time: the per-channel
// accumulators live in registers for the whole loop over rows. Same sums, in
// the same order, as the general loops.
//   deviations: s1[j] += x - shift[j];  s2[j] += (x - shift[j])^2
template <int W, class T>
inline void rows_deviations_fixed(const T* x, int64_t rows, int64_t ld,
                                  const double* shift, double* s1, double* s2) {
  double a1[W], a2[W], sh[W];
  for (int j = 0; j < W; ++j) {
    a1[j] = s1[j];
    a2[j] = s2[j];
    sh[j] = shift[j];
  }
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld;
    BNORM_SIMD
    for (int j = 0; j < W; ++j) {
      const double d = static_cast<double>(xr[j]) - sh[j];
      a1[j] += d;
      a2[j] += d * d;
    }
  }
  for (int j = 0; j < W; ++j) {
    s1[j] = a1[j];
    s2[j] = a2[j];
  }
}

//   gradients: a[j] += g;  b[j] += g * (x - mean[j])
template <int W, class T>
inline void rows_gradients_fixed(const T* g, const T* x, int64_t rows, int64_t ld,
                                 const double* mean, double* a, double* b) {
  double va[W], vb[W], mu[W];
  for (int j = 0; j < W; ++j) {
    va[j] = a[j];
    vb[j] = b[j];
    mu[j] = mean[j];
  }
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = g + r * ld;
    const T* xr = x + r * ld;
    BNORM_SIMD
    for (int j = 0; j < W; ++j) {
      const double gj = static_cast<double>(gr[j]);
      va[j] += gj;
      vb[j] += gj * (static_cast<double>(xr[j]) - mu[j]);
    }
  }
  for (int j = 0; j < W; ++j) {
    a[j] = va[j];
    b[j] = vb[j];
  }
}

// Rows layout with a ReLU mask M (GCC 12 does not vectorize a select whose
// mask comes from converted floats, so this is written with vector types):
// over `rows` rows of stride ld and channels [0, cw),
//   a[j] += g;  b[j] += g * (x - mu[j]),  g = dy where the mask is open.
// Rows are taken in chunks, each chunk column block by column block with
// the accumulators in registers; per channel the rows are still added in
// order, so the sums are those of the one-row loops.
template <int M, class T>
inline void rows_gradients_masked(const T* g, const T* x, const T* y, int64_t rows,
                                  int64_t ld, int64_t cw, const double* mu,
                                  const Param<T>* fm, const Param<T>* fs,
                                  const Param<T>* fb, double* a, double* b) {
  constexpr int64_t kChunkRows = 32;
  auto open = [&](double gv, double xv, int64_t o, int64_t j) {
    if constexpr (M == kMaskY) {
      return static_cast<double>(y[o]) > 0.0 ? gv : 0.0;
    } else {
      const double pre = (xv - static_cast<double>(fm[j])) * static_cast<double>(fs[j]) +
                         static_cast<double>(fb[j]);
      return pre > 0.0 ? gv : 0.0;
    }
  };
  for (int64_t r0 = 0; r0 < rows; r0 += kChunkRows) {
    const int64_t r1 = std::min(rows, r0 + kChunkRows);
    int64_t j = 0;
#ifdef BNORM_VECTOR_TYPES
    // NV vectors of channels at once: independent chains hide add latency
    auto block = [&](auto nv_tag) {
      constexpr int NV = decltype(nv_tag)::value;
      VecD va[NV], vb[NV], m[NV], cm[NV], cs[NV], cb[NV];
#pragma GCC unroll 8
      for (int k = 0; k < NV; ++k) {
        const int64_t jk = j + k * kVecLanes;
        va[k] = load_lanes(a + jk);
        vb[k] = load_lanes(b + jk);
        m[k] = load_lanes(mu + jk);
        if constexpr (M == kMaskX) {
          cm[k] = load_lanes(fm + jk);
          cs[k] = load_lanes(fs + jk);
          cb[k] = load_lanes(fb + jk);
        }
      }
      for (int64_t r = r0; r < r1; ++r) {
#pragma GCC unroll 8
        for (int k = 0; k < NV; ++k) {
          const int64_t o = r * ld + j + k * kVecLanes;
          const VecD xv = load_lanes(x + o);
          VecD gv = load_lanes(g + o);
          if constexpr (M == kMaskY)
            gv = load_lanes(y + o) > 0.0 ? gv : VecD{};
          else
            gv = (xv - cm[k]) * cs[k] + cb[k] > 0.0 ? gv : VecD{};
          va[k] += gv;
          vb[k] += gv * (xv - m[k]);
        }
      }
#pragma GCC unroll 8
      for (int k = 0; k < NV; ++k) {
        std::memcpy(a + j + k * kVecLanes, &va[k], sizeof va[k]);
        std::memcpy(b + j + k * kVecLanes, &vb[k], sizeof vb[k]);
      }
      j += NV * kVecLanes;
    };
    while (j + 4 * kVecLanes <= cw) block(std::integral_constant<int, 4>());
    while (j + kVecLanes <= cw) block(std::integral_constant<int, 1>());
#endif
    for (; j < cw; ++j)
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t o = r * ld + j;
        const double xv = static_cast<double>(x[o]);
        const double gj = open(static_cast<double>(g[o]), xv, o, j);
        a[j] += gj;
        b[j] += gj * (xv - mu[j]);
      }
  }
}

// Dispatches a channel count to the fixed-width loops; false if none fits.
template <class T>
inline bool rows_deviations_small(int64_t cw, const T* x, int64_t rows, int64_t ld,
                                  const double* shift, double* s1, double* s2) {
  switch (cw) {
    case 8: rows_deviations_fixed<8>(x, rows, ld, shift, s1, s2); return true;
    case 16: rows_deviations_fixed<16>(x, rows, ld, shift, s1, s2); return true;
    case 32: rows_deviations_fixed<32>(x, rows, ld, shift, s1, s2); return true;
    case 64: rows_deviations_fixed<64>(x, rows, ld, shift, s1, s2); return true;
    default: return false;
  }
}

template <class T>
inline bool rows_gradients_small(int64_t cw, const T* g, const T* x, int64_t rows,
                                 int64_t ld, const double* mean, double* a, double* b) {
  switch (cw) {
    case 8: rows_gradients_fixed<8>(g, x, rows, ld, mean, a, b); return true;
    case 16: rows_gradients_fixed<16>(g, x, rows, ld, mean, a, b); return true;
    case 32: rows_gradients_fixed<32>(g, x, rows, ld, mean, a, b); return true;
    case 64: rows_gradients_fixed<64>(g, x, rows, ld, mean, a, b); return true;
    default: return false;
  }
}

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
