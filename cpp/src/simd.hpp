// The vector vocabulary of the kernels, in one place. Each kernel
// translation unit is compiled once per instruction set (cpp/CMakeLists.txt);
// BNORM_ISA_NS names the namespace of that copy. The scalar copy turns every
// vector form off, so it is a plain sequential reference that the vector
// copies are tested against bitwise.
//
// Three forms, each for one job:
//  - each(): elementwise maps, vectorized by the compiler (omp simd); every
//    index is computed alone, so the vector width changes no result.
//  - Lanes / VecD: reductions in double with a fixed lane order. Value i of
//    a run goes to accumulator lane i % kLanes and the lanes are combined in
//    a fixed pairwise tree (Lanes::total), written with GCC/Clang vector
//    types in the vector copies and with plain loops in the scalar one: the
//    same sums, in the same order, on every CPU. kLanes independent chains
//    also hide the latency of the adds.
//  - stream_out(): non-temporal stores (x86 intrinsics) for outputs too large
//    to stay in cache; value for value what the plain loop computes.
// FMA contraction is off for the kernels (cpp/CMakeLists.txt), so a vector
// copy rounds each operation exactly as the scalar copy does.
#pragma once

#ifndef BNORM_ISA_NS
#error "kernel sources are compiled with -DBNORM_ISA_NS=<namespace>"
#endif

#define BNORM_PRAGMA(x) _Pragma(#x)
#if defined(BNORM_ISA_SCALAR)
#define BNORM_SIMD
#else
#define BNORM_SIMD BNORM_PRAGMA(omp simd)
#endif

// Bytes of one hardware vector register of this copy (GCC/Clang vector
// types of this size map to single registers).
#if defined(__AVX512F__)
#define BNORM_VEC_BYTES 64
#elif defined(__AVX__)
#define BNORM_VEC_BYTES 32
#else
#define BNORM_VEC_BYTES 16
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

#include "half.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#if !defined(BNORM_ISA_SCALAR) && (defined(__x86_64__) || defined(_M_X64)) && \
    (defined(__GNUC__) || defined(__clang__))
#define BNORM_HAVE_STREAM 1
#endif
// The vector copies of x86 convert halves with F16C (dispatch.cpp requires
// it with AVX2), bit for bit what HalfCodec computes.
#if !defined(BNORM_ISA_SCALAR) && defined(__F16C__)
#define BNORM_HAVE_F16C 1
#endif

namespace bnorm {
namespace BNORM_ISA_NS {

// ---- elementwise maps ----------------------------------------------------

// for (i = 0; i < n; ++i) f(i), vectorized, with the iterations before
// out + i is aligned to a vector register peeled off. A vector store that
// straddles two cache lines costs about twice an aligned one, and large
// NumPy arrays start 16 bytes past a page boundary, so without the peel
// every AVX-512 store of a pass over one would straddle. Each f(i) computes
// and stores the values of index i alone, so the peel changes no result.
// Short runs are not peeled: the peel is up to a vector's worth of scalar
// iterations (31 of 16-bit values with AVX-512), which on runs of a few
// dozen values (7x7 feature maps) made most of the run scalar and cost more
// than the split stores it avoids.
constexpr int64_t kPeelMinVectors = 4;

template <class T, class F>
inline void each(const T* out, int64_t n, const F& f) {
  int64_t i = 0;
#if !defined(BNORM_ISA_SCALAR)
  const auto mis = static_cast<int64_t>(reinterpret_cast<uintptr_t>(out) % BNORM_VEC_BYTES);
  if (mis % int64_t(sizeof(T)) == 0 &&
      n >= kPeelMinVectors * (BNORM_VEC_BYTES / int64_t(sizeof(T)))) {
    const int64_t h =
        std::min<int64_t>(n, (BNORM_VEC_BYTES - mis) % BNORM_VEC_BYTES / int64_t(sizeof(T)));
    for (; i < h; ++i) f(i);
  }
#else
  (void)out;
#endif
  BNORM_SIMD
  for (int64_t k = i; k < n; ++k) f(k);
}


// ---- half-precision runs as floats -----------------------------------------
// f[i] = p[i] widened, and p[i] = f[i] narrowed, for i in [0, n): the
// conversions of half.hpp, with F16C for Half where present (the same bits).
// widen may write f up to n rounded up to 16 values.

template <class C>
inline void widen(const Storage16<C>* p, float* f, int64_t n) {
  const uint16_t* h = &p->bits;
  int64_t i = 0;
#if defined(BNORM_HAVE_F16C)
  if constexpr (std::is_same_v<C, HalfCodec>) {
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(f + i, _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(
                                  reinterpret_cast<const __m256i*>(h + i))));
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    if (i < n) {
      // the last < 16 values: a masked load, and a whole store (zeros past
      // n) that the loads of the values can forward from, as they cannot
      // from a masked store
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
      _mm512_storeu_ps(f + i, _mm512_maskz_cvtph_ps(0xFFFF, _mm256_maskz_loadu_epi16(m, h + i)));
      return;
    }
#endif
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                  reinterpret_cast<const __m128i*>(h + i))));
  }
#endif
  BNORM_SIMD
  for (int64_t k = i; k < n; ++k) f[k] = C::to_float(h[k]);
}

template <class C>
inline void narrow(const float* f, Storage16<C>* p, int64_t n) {
  uint16_t* h = &p->bits;
  int64_t i = 0;
#if defined(BNORM_HAVE_F16C)
  if constexpr (std::is_same_v<C, HalfCodec>) {
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + i),
                          _mm512_maskz_cvtps_ph(0xFFFF, _mm512_loadu_ps(f + i), kRound));
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    if (i < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
      _mm256_mask_storeu_epi16(h + i, m,
                               _mm512_maskz_cvtps_ph(0xFFFF, _mm512_maskz_loadu_ps(m, f + i),
                                                     kRound));
      return;
    }
#endif
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(f + i), kRound));
  }
#endif
  BNORM_SIMD
  for (int64_t k = i; k < n; ++k) h[k] = C::from_float(f[k]);
}

// The page the hardware prefetchers track addresses within: loops over
// channels-last rows shorter than this take one row at a time, since four
// such rows swept channel by channel visit one page out of order
// (rows_per_sweep() in reduce_rows.hpp, Map::row4 in elementwise.hpp).
constexpr int64_t kPageBytes = 4096;

// ---- reductions in double, fixed lane order -------------------------------

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

// Room for N Lanes on the stack of which only the first `used` are made
// (cleared): a small call uses a few of kMaxPlanarBlock, and clearing them
// all cost 8 KiB of stores per unit.
template <int N>
struct LaneArray {
  alignas(Lanes) unsigned char raw[N * sizeof(Lanes)];
  explicit LaneArray(int64_t used) {
    for (int64_t i = 0; i < used; ++i) new (raw + i * sizeof(Lanes)) Lanes();
  }
  Lanes& operator[](int64_t i) { return reinterpret_cast<Lanes*>(raw)[i]; }
};

// ---- deviations in float, products exact in double -----------------------
// The reductions of float and half-precision data form each deviation in
// float, d = x - k (k: the shift or the saved mean, itself a float), and
// add d, d * d, g and g * d in double. A product of two floats is exact in
// double, so s + a * b rounds once whether it is one fused multiply-add or
// a multiply and an add: the copies that have FMA fuse it, the others do
// not, and all give the same bits. (Deviations of float64 data have 53
// bits, their products are not exact, and stay a multiply and an add.)
// Dev<T>: the type a deviation of T is formed in.
template <class T> struct DevOf { typedef float type; };
template <> struct DevOf<double> { typedef double type; };
template <class T> using Dev = typename DevOf<T>::type;
// The statistics (moments) form float32 data's deviations in double, where
// a difference of two floats is exact, so that float32 statistics are
// those of double arithmetic on the data; a difference of two halves is
// exact in float in all but extreme cases, so half-precision data take the
// faster float form.
template <class T> struct StatDevOf { typedef Dev<T> type; };
template <> struct StatDevOf<float> { typedef double type; };
template <class T> using StatDev = typename StatDevOf<T>::type;

// s + a * b, where a * b is exact in double when D is float.
template <class D>
inline double add_product(double s, double a, double b) {
#if !defined(BNORM_ISA_SCALAR) && (defined(__FMA__) || defined(__aarch64__))
  if constexpr (std::is_same_v<D, float>) return __builtin_fma(a, b, s);
#endif
  return s + a * b;
}

// x - k formed in D (float for float and half-precision data), as a double.
template <class T, class D>
inline double deviation(T x, D k) {
  return static_cast<double>(static_cast<D>(x) - k);
}

#if !defined(BNORM_ISA_SCALAR) && (defined(__GNUC__) || defined(__clang__))
#define BNORM_VECTOR_TYPES 1
// One hardware register of doubles; kLanes of them make kRegs registers,
// kept as separate variables so the compiler holds them in registers.
constexpr int kVecBytes = BNORM_VEC_BYTES;
constexpr int kVecLanes = kVecBytes / 8;
constexpr int kRegs = kLanes / kVecLanes;
typedef double VecD __attribute__((vector_size(kVecBytes)));
typedef float VecF __attribute__((vector_size(kVecBytes / 2)));

// Half-precision lanes: the conversions of half.hpp, lane by lane.
typedef uint16_t VecU16 __attribute__((vector_size(kVecBytes / 4)));
typedef uint32_t VecU32 __attribute__((vector_size(kVecBytes / 2)));
inline VecU32 load_u16(const uint16_t* p) {
  VecU16 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, VecU32);
}
// A register of kVecLanes floats from one of the same size (bit for bit).
template <class R>
inline VecF floats_of(R f) {
  static_assert(sizeof(R) == sizeof(VecF), "one register of floats");
  VecF v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}
inline VecF bits_to_floats(VecU32 u) { return floats_of(u); }

// kVecLanes values of p as floats (exact).
inline VecF load_floats(const float* p) {
  VecF f;
  std::memcpy(&f, p, sizeof f);
  return f;
}
inline VecF load_floats(const BFloat16* p) { return bits_to_floats(load_u16(&p->bits) << 16); }
inline VecF load_floats(const Half* p) {
#if defined(BNORM_HAVE_F16C)
  // the F16C conversion, 8 (AVX-512) or 4 halves
#if defined(__AVX512F__)
  const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  const __m128 f = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#endif
  return floats_of(f);
#else
  // HalfCodec::to_float, lane by lane
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
  return bits_to_floats(o | ((h & 0x8000u) << 16));
#endif
}
// Floats to doubles, lane by lane (exact). GCC 12 builds the generic form
// for AVX-512 out of two half-width conversions, an extract and an insert,
// which made the planar reductions compute-bound. One instruction instead:
inline VecD widen_lanes(VecF f) {
#if defined(__AVX512F__) && (defined(__x86_64__) || defined(_M_X64))
  // (the all-lanes masked form: the same instruction, without the plain
  // form's deliberately uninitialized operand that GCC 12 warns about)
  __m256 a;
  std::memcpy(&a, &f, sizeof a);
  const __m512d d = _mm512_maskz_cvtps_pd(0xFF, a);
#elif defined(__AVX__) && (defined(__x86_64__) || defined(_M_X64))
  __m128 a;
  std::memcpy(&a, &f, sizeof a);
  const __m256d d = _mm256_cvtps_pd(a);
#else
  const VecD d = __builtin_convertvector(f, VecD);
#endif
  VecD v;
  std::memcpy(&v, &d, sizeof v);
  return v;
}
// kVecLanes values of p as doubles (exact).
template <class T>
inline VecD load_lanes(const T* p) {
  return widen_lanes(load_floats(p));
}
inline VecD load_lanes(const double* p) {
  VecD v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// The lanes of p minus k, formed in D (float for float and half-precision
// data), as doubles.
template <class D, class T>
inline VecD deviation_lanes(const T* p, D k) {
  if constexpr (std::is_same_v<D, double>) {
    return load_lanes(p) - k;
  } else {
    return widen_lanes(load_floats(p) - k);
  }
}
// f on the lanes as the intrinsics' register type R (bit for bit the same).
template <class R, class F>
inline VecD on_registers(VecD s, VecD a, VecD b, const F& f) {
  static_assert(sizeof(R) == sizeof(VecD), "one register of lanes");
  R x, y, z;
  std::memcpy(&x, &a, sizeof x), std::memcpy(&y, &b, sizeof y), std::memcpy(&z, &s, sizeof z);
  const R r = f(x, y, z);
  VecD v;
  std::memcpy(&v, &r, sizeof v);
  return v;
}
// s + a * b lane by lane, fused where exact (add_product).
template <class D>
inline VecD add_product(VecD s, VecD a, VecD b) {
  if constexpr (std::is_same_v<D, float>) {
#if defined(__AVX512F__) && (defined(__x86_64__) || defined(_M_X64))
    return on_registers<__m512d>(
        s, a, b, [](__m512d x, __m512d y, __m512d z) { return _mm512_fmadd_pd(x, y, z); });
#elif defined(__FMA__) && (defined(__x86_64__) || defined(_M_X64))
    return on_registers<__m256d>(
        s, a, b, [](__m256d x, __m256d y, __m256d z) { return _mm256_fmadd_pd(x, y, z); });
#endif
  }
  return s + a * b;
}

// ---- the last < kLanes values of a run, in registers ----------------------
// With AVX-512 (BW, VL) a reduction's tail is vector lanes too: the first r
// values of a register loaded with a masked load (nothing past them is read)
// and every lane from r on zeroed after the arithmetic. A zeroed lane adds
// +0.0 and 0.0 * 0.0 to its accumulator, which leaves any value there as it
// is (a lane's sum is never -0.0: it starts at +0.0, and +0.0 plus -0.0 is
// +0.0 when rounding to nearest), so the sums are those of the scalar
// loop, which adds the tail's values one lane at a time. This replaces
// kLanes scalar steps per run whose loads of lanes just stored as a vector
// cannot be forwarded; on the 14x14 and 7x7 runs of a planar tensor they
// were a third of the time of the statistics pass.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    (defined(__x86_64__) || defined(_M_X64))
#define BNORM_MASKED_TAILS 1
// lanes [0, r) of a register of kVecLanes (8) doubles
inline __mmask8 first_lanes(int64_t r) {
  return r >= kVecLanes ? __mmask8(0xFF) : static_cast<__mmask8>((1u << r) - 1);
}
// The first min(r, kVecLanes) values at p as load_floats gives them, 0 after.
inline VecF load_floats_first(const float* p, int64_t r) {
  return floats_of(_mm256_maskz_loadu_ps(first_lanes(r), p));
}
inline VecF load_floats_first(const Half* p, int64_t r) {
  return floats_of(_mm256_cvtph_ps(_mm_maskz_loadu_epi16(first_lanes(r), &p->bits)));
}
inline VecF load_floats_first(const BFloat16* p, int64_t r) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_maskz_loadu_epi16(first_lanes(r), &p->bits));
  return floats_of(_mm256_castsi256_ps(_mm256_slli_epi32(u, 16)));
}
template <class T>
inline VecD load_lanes_first(const T* p, int64_t r) {
  return widen_lanes(load_floats_first(p, r));
}
inline VecD load_lanes_first(const double* p, int64_t r) {
  const __m512d d = _mm512_maskz_loadu_pd(first_lanes(r), p);
  VecD v;
  std::memcpy(&v, &d, sizeof v);
  return v;
}
// v with the lanes from r on set to +0.0.
inline VecD keep_first(VecD v, int64_t r) {
  __m512d d;
  std::memcpy(&d, &v, sizeof d);
  d = _mm512_maskz_mov_pd(first_lanes(r), d);
  std::memcpy(&v, &d, sizeof v);
  return v;
}
// deviation_lanes of the first r values, 0 in the other lanes.
template <class D, class T>
inline VecD deviation_lanes_first(const T* p, D k, int64_t r) {
  if constexpr (std::is_same_v<D, double>) {
    return keep_first(load_lanes_first(p, r) - k, r);
  } else {
    return keep_first(widen_lanes(load_floats_first(p, r) - k), r);
  }
}
#endif

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

// ---- streaming stores ------------------------------------------------------
// A normal store to a line that is not cached first reads the line from
// memory (read for ownership); for an output that is only written, that is
// a third of the traffic of a copy wasted. Streaming stores write whole
// lines straight to memory. They are used only when the output is larger
// than the last-level cache can usefully keep (elementwise.hpp decides).

#ifdef BNORM_HAVE_STREAM
constexpr int kStreamBytes = BNORM_VEC_BYTES;
typedef float SVecF __attribute__((vector_size(kStreamBytes)));
typedef double SVecD __attribute__((vector_size(kStreamBytes)));
template <class T> struct SVec;
template <> struct SVec<float> { typedef SVecF type; };
template <> struct SVec<double> { typedef SVecD type; };

// One register's worth of v stored non-temporally at p (aligned); the
// integer form serves every element type.
template <class V>
inline void nt_store(void* p, V v) {
#if defined(__AVX512F__)
  _mm512_stream_si512(static_cast<__m512i*>(p), reinterpret_cast<__m512i&>(v));
#elif defined(__AVX__)
  _mm256_stream_si256(static_cast<__m256i*>(p), reinterpret_cast<__m256i&>(v));
#else
  _mm_stream_si128(static_cast<__m128i*>(p), reinterpret_cast<__m128i&>(v));
#endif
}

template <class T>
inline typename SVec<T>::type sload(const T* p) {
  typename SVec<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Makes this thread's streaming stores visible before others read them.
inline void stream_fence() { _mm_sfence(); }

// y[i] = scalar(i) for i in [0, n), with vector(i) giving the values
// [i, i + W) at once; the output bypasses the caches.
//
// The runs of a planar tensor are back to back in memory, so the cache line
// where one run ends and the next begins is written by two calls, the end
// first. A line that gets streaming stores and then normal ones leaves the
// write-combining buffer as a partial write, which is slow (the other order,
// normal stores first, measured fine). So:
//  - a run whose two ends are vector-aligned streams all of it, and the
//    lines it shares with its neighbours are completed by their streaming
//    stores (AVX2: runs starting 0 or 32 bytes into a line);
//  - otherwise the head up to vector alignment gets normal stores (before
//    the line's streaming stores, as in the order that is fine), and the
//    streaming stops at the last line boundary of the run: its partial last
//    line gets normal stores only. With the streaming going on to the last
//    vector boundary instead, a planar float32 inference whose output starts
//    48 bytes into a line, with runs of 512 bytes, was 3-6x slower than
//    with an aligned output.
template <class T, class V, class S>
inline void stream_out(T* y, int64_t n, const V& vector, const S& scalar) {
  constexpr int64_t W = kStreamBytes / sizeof(T);
  constexpr uintptr_t kLine = 64;
  const auto at = [](const T* p) { return reinterpret_cast<uintptr_t>(p); };
  int64_t i = 0;
  int64_t stop = n;  // where the streaming stops
  if (at(y + n) % kStreamBytes != 0 || at(y) % kStreamBytes != 0)
    stop = std::max<int64_t>(0, n - int64_t((at(y + n) % kLine) / sizeof(T)));
  while (i < stop && at(y + i) % kStreamBytes != 0) {
    y[i] = scalar(i);
    ++i;
  }
  for (; i + W <= stop; i += W) nt_store(y + i, vector(i));
  for (; i < n; ++i) y[i] = scalar(i);
}

#else
inline void stream_fence() {}
#endif

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
