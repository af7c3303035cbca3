// The ReLU of a fused backward, shared by the reducers and the dx maps.
#pragma once

#include <cstdint>

#include "half.hpp"
#include "simd.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {

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


// The mask's inputs: the forward's output y (kMaskY, in the layout of dy),
// or per-channel forward coefficients m, s, b (kMaskX).
template <class T>
struct MaskArgs {
  const T* y = nullptr;
  const Param<T> *fm = nullptr, *fs = nullptr, *fb = nullptr;
};

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
