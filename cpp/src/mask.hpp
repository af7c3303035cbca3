// The ReLU of a fused backward, shared by the reducers and the dx maps.
#pragma once

#include <cstdint>

#include "half.hpp"
#include "simd.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {

// The activation of a fused backward (BN followed by ReLU or ReLU6): which
// values' dy reach the batch norm. kNoMask: all; kMaskY: where the forward's
// output y > 0; kMaskX: where the pre-activation (x - m) * s + b > 0,
// recomputed in T from per-channel coefficients. With kClip6 added (ReLU6,
// kMaskY6 and kMaskX6) also only where that value is < 6: the gradient of
// min(max(v, 0), 6) is 0 where either bound holds (PyTorch's hardtanh
// backward). A masked g is 0 (selected, not multiplied: a NaN dy where the
// activation was closed gives 0, as in PyTorch).
enum MaskKind { kNoMask = 0, kMaskY = 1, kMaskX = 2, kClip6 = 4,
                kMaskY6 = kMaskY | kClip6, kMaskX6 = kMaskX | kClip6 };
constexpr bool from_y(int M) { return (M & 3) == kMaskY; }
constexpr bool from_x(int M) { return (M & 3) == kMaskX; }

// Whether the activation let a value v (y, or the pre-activation) through.
template <int M>
inline bool mask_open(double v) {
  if constexpr ((M & kClip6) != 0) return v > 0.0 && v < 6.0;
  return v > 0.0;
}

// (kMaskX computes the pre-activation in double in every pass of a call, so
// the reductions and the dx pass always agree on the mask.)
template <int M, class T, class Q>
inline double masked(double g, T x, T y, Q m, Q s, Q b) {
  if (from_y(M)) return mask_open<M>(static_cast<double>(y)) ? g : 0.0;
  if (from_x(M))
    return mask_open<M>((static_cast<double>(x) - static_cast<double>(m)) *
                            static_cast<double>(s) + static_cast<double>(b)) ? g : 0.0;
  (void)x, (void)y, (void)m, (void)s, (void)b;
  return g;
}

#ifdef BNORM_VECTOR_TYPES
// g where the activation was open at v, 0 elsewhere, lane by lane.
template <int M>
inline VecD gate_lanes(VecD g, VecD v) {
  if constexpr ((M & kClip6) != 0) return ((v > 0.0) & (v < 6.0)) ? g : VecD{};
  return v > 0.0 ? g : VecD{};
}

#if defined(__AVX512F__)
// mask_open<M> of 16 floats or 8 doubles, as a lane mask (for a float v the
// same as mask_open of the double it widens to).
template <int M>
inline __mmask16 open_lanes(__m512 v) {
  __mmask16 o = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ);
  if constexpr ((M & kClip6) != 0) o &= _mm512_cmp_ps_mask(v, _mm512_set1_ps(6.0f), _CMP_LT_OQ);
  return o;
}
template <int M>
inline __mmask8 open_lanes(__m512d v) {
  __mmask8 o = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_GT_OQ);
  if constexpr ((M & kClip6) != 0) o &= _mm512_cmp_pd_mask(v, _mm512_set1_pd(6.0), _CMP_LT_OQ);
  return o;
}
#endif

// g where the mask is open, 0 elsewhere; v holds the lanes of y (kMaskY)
// or x (kMaskX).
template <int M, class Q>
inline VecD masked_lanes(VecD g, VecD v, Q m, Q s, Q b) {
  if constexpr (from_y(M)) {
    return gate_lanes<M>(g, v);
  } else if constexpr (from_x(M)) {
    const VecD pre = (v - static_cast<double>(m)) * static_cast<double>(s) +
                     static_cast<double>(b);
    return gate_lanes<M>(g, pre);
  } else {
    (void)v, (void)m, (void)s, (void)b;
    return g;
  }
}
// The same with p pointing at kVecLanes values of y or x, of type T.
template <int M, class T, class Q>
inline VecD masked(VecD g, const T* p, Q m, Q s, Q b) {
  if constexpr (M == kNoMask) {
    (void)p, (void)m, (void)s, (void)b;
    return g;
  } else {
    return masked_lanes<M>(g, load_lanes(p), m, s, b);
  }
}
#endif


// The mask's inputs: the forward's output y (kMaskY, in the layout of dy),
// or per-channel forward coefficients m, s, b (kMaskX).
template <class T>
struct MaskArgs {
  const T* y = nullptr;
  const Param<T> *fm = nullptr, *fs = nullptr, *fb = nullptr;
};

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
