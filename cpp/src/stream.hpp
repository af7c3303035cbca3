// Non-temporal ("streaming") stores for outputs too large to stay in cache.
//
// A normal store to a line that is not cached first reads the line from
// memory (read for ownership); for an output that is only written, that is
// a third of the traffic of a copy wasted. Streaming stores write whole
// lines straight to memory. They are used only when the output is larger
// than the last-level cache can usefully keep (elementwise.hpp decides), and
// compute exactly what the normal loop computes, value for value.
#pragma once

#include <cstdint>
#include <cstring>

#include "simd.hpp"

#if !defined(BNORM_ISA_SCALAR) && (defined(__x86_64__) || defined(_M_X64)) && \
    (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BNORM_HAVE_STREAM 1
#endif

namespace bnorm {
namespace BNORM_ISA_NS {

#ifdef BNORM_HAVE_STREAM
constexpr int kStreamBytes = BNORM_VEC_BYTES;
typedef float SVecF __attribute__((vector_size(kStreamBytes)));
typedef double SVecD __attribute__((vector_size(kStreamBytes)));
template <class T> struct SVec;
template <> struct SVec<float> { typedef SVecF type; };
template <> struct SVec<double> { typedef SVecD type; };

inline void nt_store(float* p, SVecF v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, reinterpret_cast<__m512&>(v));
#elif defined(__AVX__)
  _mm256_stream_ps(p, reinterpret_cast<__m256&>(v));
#else
  _mm_stream_ps(p, reinterpret_cast<__m128&>(v));
#endif
}
inline void nt_store(double* p, SVecD v) {
#if defined(__AVX512F__)
  _mm512_stream_pd(p, reinterpret_cast<__m512d&>(v));
#elif defined(__AVX__)
  _mm256_stream_pd(p, reinterpret_cast<__m256d&>(v));
#else
  _mm_stream_pd(p, reinterpret_cast<__m128d&>(v));
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
// [i, i + W) at once; aligned full vectors are streamed.
template <class T, class V, class S>
inline void stream_out(T* y, int64_t n, const V& vector, const S& scalar) {
  constexpr int64_t W = kStreamBytes / sizeof(T);
  int64_t i = 0;
  while (i < n && (reinterpret_cast<uintptr_t>(y + i) % kStreamBytes) != 0) {
    y[i] = scalar(i);
    ++i;
  }
  for (; i + W <= n; i += W) nt_store(y + i, vector(i));
  for (; i < n; ++i) y[i] = scalar(i);
}
#else
inline void stream_fence() {}
#endif

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
