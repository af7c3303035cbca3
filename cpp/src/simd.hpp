// Vectorization hints. Each kernel translation unit is compiled once per
// instruction set (see cpp/CMakeLists.txt); BNORM_ISA_NS names the
// namespace of that copy. The scalar copy turns the hints off, so it is a
// plain sequential reference that the vector copies are tested against.
#pragma once

#ifndef BNORM_ISA_NS
#error "kernel sources are compiled with -DBNORM_ISA_NS=<namespace>"
#endif

#define BNORM_PRAGMA(x) _Pragma(#x)
#if defined(BNORM_ISA_SCALAR)
#define BNORM_SIMD
#define BNORM_SIMD_REDUCTION(...)
#else
#define BNORM_SIMD BNORM_PRAGMA(omp simd)
#define BNORM_SIMD_REDUCTION(...) BNORM_PRAGMA(omp simd reduction(__VA_ARGS__))
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

namespace bnorm {
namespace BNORM_ISA_NS {

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

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
