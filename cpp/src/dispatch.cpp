// Run-time choice of the kernels' instruction set.
//
// The best set the CPU supports is used, unless the environment variable
// BNORM_ISA names another one (that the CPU supports) -- which is how the
// tests run every vector copy against the scalar one. The choice is made
// once per process and never changes.
#include <cstdlib>
#include <cstring>

#if defined(BNORM_HAVE_ISA_AVX2) || defined(BNORM_HAVE_ISA_AVX512)
#include <cpuid.h>
#endif

#include "kernels.hpp"

namespace bnorm {

BNORM_DECLARE_KERNELS(isa_scalar)
#ifdef BNORM_HAVE_ISA_BASELINE
BNORM_DECLARE_KERNELS(isa_baseline)
#endif
#ifdef BNORM_HAVE_ISA_AVX2
BNORM_DECLARE_KERNELS(isa_avx2)
#endif
#ifdef BNORM_HAVE_ISA_AVX512
BNORM_DECLARE_KERNELS(isa_avx512)
#endif

namespace {

enum Isa { kScalar, kBaseline, kAvx2, kAvx512 };

#if defined(BNORM_HAVE_ISA_AVX2) || defined(BNORM_HAVE_ISA_AVX512)
// F16C, read from CPUID (leaf 1, ECX bit 29): clang's __builtin_cpu_supports
// does not know the name.
bool has_f16c() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif
const char* const kNames[] = {"scalar", "baseline", "avx2", "avx512"};

bool supported(Isa isa) {
  switch (isa) {
    case kScalar: return true;
#ifdef BNORM_HAVE_ISA_BASELINE
    case kBaseline: return true;
#endif
#if defined(BNORM_HAVE_ISA_AVX2) && (defined(__GNUC__) || defined(__clang__))
    case kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
#endif
#if defined(BNORM_HAVE_ISA_AVX512) && (defined(__GNUC__) || defined(__clang__))
    case kAvx512:
      return __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
#endif
    default: return false;
  }
}

Isa choose() {
  if (const char* want = std::getenv("BNORM_ISA")) {
    for (int i = kScalar; i <= kAvx512; ++i)
      if (std::strcmp(want, kNames[i]) == 0 && supported(Isa(i))) return Isa(i);
  }
  for (int i = kAvx512; i > kScalar; --i)
    if (supported(Isa(i))) return Isa(i);
  return kScalar;
}

Isa chosen() {
  static const Isa isa = choose();
  return isa;
}

template <class T>
Kernels<T> table(Isa isa) {
#define BNORM_POINTER(name) &ns::name<T>,
#define BNORM_TABLE(isa_ns)                              \
  {                                                      \
    namespace ns = isa_ns;                               \
    return Kernels<T>{BNORM_KERNELS(BNORM_POINTER)};     \
  }
  switch (isa) {
#ifdef BNORM_HAVE_ISA_AVX512
    case kAvx512: BNORM_TABLE(isa_avx512)
#endif
#ifdef BNORM_HAVE_ISA_AVX2
    case kAvx2: BNORM_TABLE(isa_avx2)
#endif
#ifdef BNORM_HAVE_ISA_BASELINE
    case kBaseline: BNORM_TABLE(isa_baseline)
#endif
    default: BNORM_TABLE(isa_scalar)
  }
#undef BNORM_TABLE
#undef BNORM_POINTER
}

}  // namespace

template <class T>
const Kernels<T>& kernels() {
  static const Kernels<T> k = table<T>(chosen());
  return k;
}

template const Kernels<float>& kernels<float>();
template const Kernels<double>& kernels<double>();
template const Kernels<Half>& kernels<Half>();
template const Kernels<BFloat16>& kernels<BFloat16>();

const char* kernel_isa() { return kNames[chosen()]; }

}  // namespace bnorm
