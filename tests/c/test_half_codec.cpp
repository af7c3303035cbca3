// The software conversions of half.hpp (the scalar copy's) against the F16C
// instructions the vector copies use: every float narrowed, every half
// widened. Widening may leave a signaling NaN signaling where vcvtph2ps
// quiets it (half.hpp says why no result can tell); everything else must
// be the same bits. Skips (exit 77) on a CPU without F16C.
#include <cpuid.h>
#include <immintrin.h>

#include <cstdint>
#include <cstdio>

#include "half.hpp"

using bnorm::HalfCodec;
using bnorm::bits_to_float;
using bnorm::float_to_bits;

__attribute__((target("f16c"))) static uint16_t hw_narrow(float f) {
  return static_cast<uint16_t>(_mm_extract_epi16(
      _mm_cvtps_ph(_mm_set1_ps(f), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), 0));
}

__attribute__((target("f16c"))) static uint32_t hw_widen(uint16_t h) {
  return float_to_bits(_mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(static_cast<short>(h)))));
}

// Differences in the floats [first, first + kBlock): the software codec in
// a loop the compiler vectorizes, against 8 conversions per instruction.
constexpr uint32_t kBlock = 4096;
__attribute__((target("avx2,f16c"))) static long narrow_block(uint32_t first) {
  alignas(32) uint32_t in[kBlock];
  alignas(32) uint16_t sw[kBlock], hw[kBlock];
  for (uint32_t i = 0; i < kBlock; ++i) in[i] = first + i;
  for (uint32_t i = 0; i < kBlock; ++i) sw[i] = HalfCodec::from_float(bits_to_float(in[i]));
  for (uint32_t i = 0; i < kBlock; i += 8)
    _mm_store_si128(reinterpret_cast<__m128i*>(hw + i),
                    _mm256_cvtps_ph(_mm256_load_ps(reinterpret_cast<const float*>(in + i)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  long n = 0;
  for (uint32_t i = 0; i < kBlock; ++i) n += sw[i] != hw[i];
  return n;
}

int main() {
  unsigned a, b, c, d;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
  if (!f16c || !__builtin_cpu_supports("avx2")) {
    std::puts("skipped: no AVX2 and F16C");
    return 77;
  }
  long bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    uint32_t sw = float_to_bits(HalfCodec::to_float(static_cast<uint16_t>(h)));
    const bool snan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0 && !(h & 0x200u);
    if (snan) sw |= 0x400000u;  // the one allowed difference
    if (sw != hw_widen(static_cast<uint16_t>(h))) {
      if (bad++ < 5) std::printf("widen %04x: %08x vs F16C %08x\n", h, sw, hw_widen(h));
    }
  }
  for (uint64_t block = 0; block < (uint64_t(1) << 32); block += kBlock) {
    const long n = narrow_block(static_cast<uint32_t>(block));
    if (n != 0) {
      for (uint32_t u = static_cast<uint32_t>(block); u < block + kBlock; ++u) {
        const float f = bits_to_float(u);
        if (HalfCodec::from_float(f) != hw_narrow(f) && bad < 10)
          std::printf("narrow %08x: %04x vs F16C %04x\n", u, HalfCodec::from_float(f),
                      hw_narrow(f));
      }
      bad += n;
    }
  }
  std::printf("%ld differences over 65,536 halves and 2^32 floats\n", bad);
  return bad == 0 ? 0 : 1;
}
