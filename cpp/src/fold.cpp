// Inference helpers: per-channel scale and shift, and folding a batch norm
// into the convolution or linear layer before it. Both are O(parameters),
// run once per model, and allocate nothing; plain loops in double, each
// result rounded once.
#include <cmath>

#include "api_common.hpp"

namespace bnorm {
namespace {

template <class T>
double scale_of(const T* var, const T* weight, double eps, int64_t c) {
  const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
  return gamma / std::sqrt(static_cast<double>(var[c]) + eps);
}

template <class T>
void scale_shift(int64_t channels, const T* mean, const T* var, const T* weight,
                 const T* bias, double eps, T* scale, T* shift) {
  for (int64_t c = 0; c < channels; ++c) {
    const double a = scale_of(var, weight, eps, c);
    const double beta = bias ? static_cast<double>(bias[c]) : 0.0;
    // shift before scale: scale may be one of the inputs (in place).
    const double mu = static_cast<double>(mean[c]);
    shift[c] = static_cast<T>(beta - mu * a);
    scale[c] = static_cast<T>(a);
  }
}

template <class T>
void fold(int64_t outer, int64_t channels, int64_t inner, const T* w,
          const T* b, const T* mean, const T* var, const T* weight,
          const T* bias, double eps, T* w_out, T* b_out) {
  // (an empty weight has nothing to scale: with channels or inner 0, outer
  // may be any size, so its loop is not entered at all)
  for (int64_t o = 0; channels > 0 && inner > 0 && o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c) {
      const double a = scale_of(var, weight, eps, c);
      const int64_t base = (o * channels + c) * inner;
      for (int64_t i = 0; i < inner; ++i)
        w_out[base + i] = static_cast<T>(static_cast<double>(w[base + i]) * a);
    }
  for (int64_t c = 0; c < channels; ++c) {
    const double a = scale_of(var, weight, eps, c);
    const double beta = bias ? static_cast<double>(bias[c]) : 0.0;
    const double b0 = b ? static_cast<double>(b[c]) : 0.0;
    b_out[c] = static_cast<T>((b0 - static_cast<double>(mean[c])) * a + beta);
  }
}

// The helpers work on parameters (float or double); for half-precision data
// the parameters are float, so callers pass BNORM_FLOAT32.
inline int64_t helper_size_of(bnorm_dtype dtype) {
  return dtype == BNORM_FLOAT32 || dtype == BNORM_FLOAT64 ? elem_size_of(dtype) : 0;
}

}  // namespace
}  // namespace bnorm

using namespace bnorm;

extern "C" {

BNORM_API bnorm_status bnorm_inference_scale_shift(
    bnorm_dtype dtype, int64_t channels, const void* mean, const void* var,
    const void* weight, const void* bias, double eps, void* scale, void* shift) {
  const int64_t es = helper_size_of(dtype);
  if (es == 0) return BNORM_ERROR_UNSUPPORTED_DTYPE;
  if (checked_elements(1, channels, 1, es) < 0) return BNORM_ERROR_INVALID_SIZE;
  if (!mean || !var || !scale || !shift) return BNORM_ERROR_NULL_POINTER;
  if (!valid_eps(eps)) return BNORM_ERROR_INVALID_EPS;
  const int64_t par = channels * es;
  const Span outs[] = {{scale, par}, {shift, par}};
  const Span ins[] = {{mean, par}, {var, par}, {weight, par}, {bias, par}};
  // Each output may be exactly one of the inputs: every input of channel c
  // is read before its outputs are written.
  if (any_forbidden_overlap_exact_ok(outs, 2, ins, 4)) return BNORM_ERROR_OVERLAP;
  if (dtype == BNORM_FLOAT32)
    scale_shift(channels, static_cast<const float*>(mean),
                static_cast<const float*>(var), static_cast<const float*>(weight),
                static_cast<const float*>(bias), eps, static_cast<float*>(scale),
                static_cast<float*>(shift));
  else
    scale_shift(channels, static_cast<const double*>(mean),
                static_cast<const double*>(var), static_cast<const double*>(weight),
                static_cast<const double*>(bias), eps, static_cast<double*>(scale),
                static_cast<double*>(shift));
  return BNORM_OK;
}

BNORM_API bnorm_status bnorm_fold_into_layer(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* layer_weight, const void* layer_bias, const void* mean,
    const void* var, const void* weight, const void* bias, double eps,
    void* folded_weight, void* folded_bias) {
  const int64_t es = helper_size_of(dtype);
  if (es == 0) return BNORM_ERROR_UNSUPPORTED_DTYPE;
  const int64_t n = checked_elements(outer, channels, inner, es);
  if (n < 0) return BNORM_ERROR_INVALID_SIZE;
  if (!layer_weight || !mean || !var || !folded_weight || !folded_bias)
    return BNORM_ERROR_NULL_POINTER;
  if (!valid_eps(eps)) return BNORM_ERROR_INVALID_EPS;
  const int64_t data = n * es, par = channels * es;
  const Span outs[] = {{folded_weight, data}, {folded_bias, par}};
  const Span ins[] = {{layer_weight, data}, {layer_bias, par}, {mean, par},
                      {var, par}, {weight, par}, {bias, par}};
  // In place is fine (folded_weight == layer_weight, folded_bias ==
  // layer_bias); the statistics and gamma, read again per outer index, must
  // not be written, so an output may only coincide with the layer's arrays.
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 6; ++j) {
      if (!overlap(outs[i], ins[j])) continue;
      const bool exact = j == i && outs[i].p == ins[j].p && outs[i].bytes == ins[j].bytes;
      if (!exact) return BNORM_ERROR_OVERLAP;
    }
  }
  if (overlap(outs[0], outs[1])) return BNORM_ERROR_OVERLAP;
  if (dtype == BNORM_FLOAT32)
    fold(outer, channels, inner, static_cast<const float*>(layer_weight),
         static_cast<const float*>(layer_bias), static_cast<const float*>(mean),
         static_cast<const float*>(var), static_cast<const float*>(weight),
         static_cast<const float*>(bias), eps, static_cast<float*>(folded_weight),
         static_cast<float*>(folded_bias));
  else
    fold(outer, channels, inner, static_cast<const double*>(layer_weight),
         static_cast<const double*>(layer_bias), static_cast<const double*>(mean),
         static_cast<const double*>(var), static_cast<const double*>(weight),
         static_cast<const double*>(bias), eps, static_cast<double*>(folded_weight),
         static_cast<double*>(folded_bias));
  return BNORM_OK;
}

}  // extern "C"
