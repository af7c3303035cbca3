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
