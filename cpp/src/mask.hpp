// The ReLU of a fused backward, shared by the reducers and the dx maps.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

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

// (kMaskX decides by the pre-activation in double, or with kRanged by the
// channel's interval of x where that is open (open_interval below: m and s
// are then its ends lo and hi), which gives the same decision on every
// value; so the reductions and the dx pass always agree on the mask.)
template <int M, bool kRanged = false, class T, class Q>
inline double masked(double g, T x, T y, Q m, Q s, Q b) {
  if (from_y(M)) return mask_open<M>(static_cast<double>(y)) ? g : 0.0;
  if (from_x(M) && kRanged) {
    const double xv = static_cast<double>(x);
    return static_cast<double>(m) <= xv && xv <= static_cast<double>(s) ? g : 0.0;
  }
  if (from_x(M))
    return mask_open<M>((static_cast<double>(x) - static_cast<double>(m)) *
                            static_cast<double>(s) + static_cast<double>(b)) ? g : 0.0;
  (void)x, (void)y, (void)m, (void)s, (void)b;
  return g;
}

// The mask from x as an interval of x. For float x and finite float m, s,
// b, the pre-activation p(x) = (x - m) * s + b in double is monotone in x
// (each rounded operation is), so the x where mask_open<M>(p(x)) holds are
// the floats of one interval [lo, hi] (ordered as floats, NaN outside it):
// one or two comparisons of x decide what the double formula decides, the
// same on every value. open_interval finds its ends, each by a few
// evaluations of p near m - b / s (and m + (6 - b) / s for ReLU6); false
// when m, s or b is not finite (then the formula itself must be used).
namespace detail {
// float bits -> unsigned key in the order of the floats (-0 just below +0)
inline uint32_t float_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline float key_float(uint32_t k) {
  const uint32_t u = (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// The smallest key in [lo, hi] at which `up` holds, `up` false at lo, true
// at hi and monotone; searched outwards from `guess` (usually within an ulp
// or two of the answer), then by halving.
template <class Up>
inline uint32_t first_up(const Up& up, uint32_t lo, uint32_t hi, uint32_t guess) {
  if (guess > lo && guess < hi) {
    const bool at = up(guess);
    for (uint32_t step = 1;; step *= 2) {
      if (at) {
        hi = guess;
        if (guess - lo <= step) break;
        guess -= step;
        if (!up(guess)) { lo = guess; break; }
      } else {
        lo = guess;
        if (hi - guess <= step) break;
        guess += step;
        if (up(guess)) { hi = guess; break; }
      }
      if (step >= 0x40000000u) break;
    }
  }
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (up(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}
inline uint32_t guess_key(double x) {
  if (!(x == x)) return float_key(0.0f);
  x = std::min(std::max(x, -3.4e38), 3.4e38);
  return float_key(static_cast<float>(x));
}
}  // namespace detail

template <int M>
inline bool open_interval(float m, float s, float b, float* lo, float* hi) {
  if (!std::isfinite(m) || !std::isfinite(s) || !std::isfinite(b)) return false;
  const double dm = m, ds = s, db = b;
  const auto pre = [&](uint32_t k) {
    return (static_cast<double>(detail::key_float(k)) - dm) * ds + db;
  };
  const uint32_t kmin = detail::float_key(-INFINITY), kmax = detail::float_key(INFINITY);
  uint32_t a = kmin, z = kmax;  // the open keys: [a, z], empty if a > z
  if (s == 0.0f) {
    // finite x: p = b (an exact 0 when b is 0); +-inf: inf * 0 is NaN, closed
    if (mask_open<M>(db)) a = kmin + 1, z = kmax - 1;
    else a = kmax, z = kmin;
  } else {
    // p(-inf) and p(+inf) are -inf and +inf (or +inf and -inf): > 0 holds
    // at one end only, so it switches once, as < 6 does for ReLU6
    const bool rising = s > 0.0f;
    const auto bound = [&](double edge, bool above) {  // ends of {p > edge} or {p < edge}
      const uint32_t g = detail::guess_key(dm + (edge - db) / ds);
      const auto inside = [&](uint32_t k) { return above ? pre(k) > edge : pre(k) < edge; };
      if (above == rising)  // the set is [k, kmax]
        a = std::max(a, detail::first_up(inside, kmin, kmax, g));
      else  // [kmin, k - 1], k the first key where it fails
        z = std::min(z,
                     detail::first_up([&](uint32_t k) { return !inside(k); }, kmin, kmax, g) - 1);
    };
    bound(0.0, true);
    if constexpr ((M & kClip6) != 0) bound(6.0, false);
  }
  if (a > z) {
    *lo = INFINITY, *hi = -INFINITY;
  } else {
    *lo = detail::key_float(a), *hi = detail::key_float(z);
  }
  return true;
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
// or x (kMaskX; with kRanged m and s are the interval's ends).
template <int M, bool kRanged = false, class Q>
inline VecD masked_lanes(VecD g, VecD v, Q m, Q s, Q b) {
  if constexpr (from_y(M)) {
    return gate_lanes<M>(g, v);
  } else if constexpr (from_x(M) && kRanged) {
    (void)b;
    return ((v >= static_cast<double>(m)) & (v <= static_cast<double>(s))) ? g : VecD{};
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
template <int M, bool kRanged = false, class T, class Q>
inline VecD masked(VecD g, const T* p, Q m, Q s, Q b) {
  if constexpr (M == kNoMask) {
    (void)p, (void)m, (void)s, (void)b;
    return g;
  } else {
    return masked_lanes<M, kRanged>(g, load_lanes(p), m, s, b);
  }
}
#endif


// The mask's inputs: the forward's output y (kMaskY, in the layout of dy),
// or per-channel forward coefficients m, s, b (kMaskX), and where every
// channel has one, the intervals [lo, hi] of x where the mask is open
// (open_interval; null otherwise).
template <class T>
struct MaskArgs {
  const T* y = nullptr;
  const Param<T> *fm = nullptr, *fs = nullptr, *fb = nullptr;
  const Param<T> *lo = nullptr, *hi = nullptr;
};

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
