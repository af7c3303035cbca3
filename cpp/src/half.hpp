// Half-precision storage types: IEEE binary16 (Half) and bfloat16 (BFloat16).
//
// They only hold data: every value is converted to float to compute, and the
// result rounded back (to nearest, ties to even) to store. The conversions
// are written with integer operations and selects, so that the compiler can
// vectorize them in every instruction-set copy.
//
// Half's conversions give the bits of the F16C instructions (vcvtph2ps, and
// vcvtps2ph rounding to nearest even), which the vector copies use where
// they pay (simd.hpp): narrowing keeps a NaN's sign and the upper bits of
// its payload and makes it quiet. One difference is left on purpose:
// widening a signaling NaN keeps it signaling where vcvtph2ps makes it
// quiet (the select that would set the bit keeps GCC from vectorizing the
// loops that widen). No result can tell them apart: every output is either
// computed from the value (which quiets it) or narrowed (which quiets it).
// tests/test_half_bits.py holds every copy to the scalar one on all 65,536
// halves, through every op.
// BFloat16's narrowing rounds subnormal floats, which the AVX-512 BF16
// instruction would flush to zero, so it stays in integer operations
// everywhere; its NaNs become quiet with the upper payload bits kept.
#pragma once

#include <cstdint>

// A lambda of a vectorized loop that must be inlined (a call left out of
// line keeps the loop scalar), written after its parameters.
#if defined(__GNUC__) || defined(__clang__)
#define BNORM_INLINE_LAMBDA __attribute__((always_inline))
#else
#define BNORM_INLINE_LAMBDA
#endif

namespace bnorm {

inline float bits_to_float(uint32_t u) { return __builtin_bit_cast(float, u); }
inline uint32_t float_to_bits(float f) { return __builtin_bit_cast(uint32_t, f); }

// The conversions of IEEE binary16.
struct HalfCodec {
  static float to_float(uint16_t h) {
    const uint32_t em = uint32_t(h & 0x7fffu) << 13;
    const uint32_t exp = em & (0x7c00u << 13);
    const uint32_t normal = em + (uint32_t(127 - 15) << 23);
    // Inf, or NaN with its payload (a signaling NaN stays so; see above)
    const uint32_t infnan = normal + (uint32_t(128 - 16) << 23);
    // subnormal: let float arithmetic normalize it (exact)
    const uint32_t sub = float_to_bits(bits_to_float(normal + (1u << 23)) -
                                       bits_to_float(113u << 23));
    uint32_t o = exp == (0x7c00u << 13) ? infnan : normal;
    o = exp == 0 ? sub : o;
    return bits_to_float(o | (uint32_t(h & 0x8000u) << 16));
  }
  static uint16_t from_float(float x) {
    const uint32_t u = float_to_bits(x);
    const uint32_t sign = u & 0x80000000u;
    const uint32_t a = u ^ sign;
    // a quiet NaN with the payload's upper bits, or overflow/Inf
    const uint32_t big = a > (255u << 23) ? (0x7e00u | ((a >> 13) & 0x3ffu)) : 0x7c00u;
    // subnormal results: float addition rounds at the right bit
    const uint32_t magic = (127u - 15 + 23 - 10 + 1) << 23;
    const uint32_t sub = float_to_bits(bits_to_float(a) + bits_to_float(magic)) - magic;
    const uint32_t norm = (a + (uint32_t(15 - 127) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
    const uint32_t o = a >= ((127u + 16) << 23) ? big : (a < (113u << 23) ? sub : norm);
    return static_cast<uint16_t>(o | (sign >> 16));
  }
};

// The conversions of bfloat16 (the upper half of a float).
struct BFloat16Codec {
  static float to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }
  static uint16_t from_float(float x) {
    const uint32_t u = float_to_bits(x);
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return static_cast<uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
  }
};

// A 16-bit storage type with Codec's conversions.
template <class Codec>
struct Storage16 {
  uint16_t bits;

  Storage16() = default;
  explicit Storage16(float f) : bits(Codec::from_float(f)) {}
  explicit operator float() const { return Codec::to_float(bits); }
  explicit operator double() const { return static_cast<double>(Codec::to_float(bits)); }
};
using Half = Storage16<HalfCodec>;
using BFloat16 = Storage16<BFloat16Codec>;

// p[i] widened to float (or itself), and p[i] = v rounded to the data type.
// The half types go through their 16-bit words: GCC vectorizes loops over
// those, not over the structs.
template <class T>
inline T ld(const T* p, int64_t i) { return p[i]; }
template <class C>
inline float ld(const Storage16<C>* p, int64_t i) {
  return C::to_float(reinterpret_cast<const uint16_t*>(p)[i]);
}
template <class T, class V>
inline void st(T* p, int64_t i, V v) { p[i] = static_cast<T>(v); }
template <class C>
inline void st(Storage16<C>* p, int64_t i, float v) {
  reinterpret_cast<uint16_t*>(p)[i] = C::from_float(v);
}

// The type parameters, statistics and arithmetic use for data of type T.
template <class T> struct ParamOf { typedef T type; };
template <> struct ParamOf<Half> { typedef float type; };
template <> struct ParamOf<BFloat16> { typedef float type; };
template <class T> using Param = typename ParamOf<T>::type;

template <class T> inline constexpr bool kIsHalf = false;
template <> inline constexpr bool kIsHalf<Half> = true;
template <> inline constexpr bool kIsHalf<BFloat16> = true;

}  // namespace bnorm
