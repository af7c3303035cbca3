// Inference forward: y = (x - mean) * gamma / sqrt(var + eps) + beta.
// Allocates nothing: each thread computes the coefficients of a block of
// channels on its stack, then streams over the block's data.
#include <cmath>

#include "elementwise.hpp"
#include "kernels.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {
namespace {

template <class T>  // T: the parameter type
struct InferenceCoefs {
  const T *mean, *var, *weight, *bias;
  double eps;
  // Vectorized (sqrt and division are correctly rounded in every
  // instruction set, so every copy gets the same bits).
  void operator()(int64_t c0, int64_t cw, T* const* k) const {
    T* m = k[0];
    T* s = k[1];
    T* b = k[2];
    const T* vc = var + c0;
    if (weight) {
      const T* w = weight + c0;
      BNORM_SIMD
      for (int64_t j = 0; j < cw; ++j)
        s[j] = static_cast<T>(static_cast<double>(w[j]) /
                              std::sqrt(static_cast<double>(vc[j]) + eps));
    } else {
      BNORM_SIMD
      for (int64_t j = 0; j < cw; ++j)
        s[j] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(vc[j]) + eps));
    }
    for (int64_t j = 0; j < cw; ++j) m[j] = mean[c0 + j];
    for (int64_t j = 0; j < cw; ++j) b[j] = bias ? bias[c0 + j] : T(0);
  }
};

}  // namespace

template <class T>
void forward_inference(const Plan& p, const T* x, const T* residual, T* y,
                       const Param<T>* mean, const Param<T>* var,
                       const Param<T>* weight, const Param<T>* bias, double eps,
                       bool relu) {
  const int64_t total = p.outer * p.channels * p.inner;
  if (total == 0) return;
  const bool stream = stream_output(total * int64_t(sizeof(T)));
  const InferenceCoefs<Param<T>> fill{mean, var, weight, bias, eps};
  auto run = [&](const auto& op) {
    parallel(threads_for(total), [&](int tid, int n) { sweep<T>(p, op, fill, tid, n); });
  };
  if (residual && relu)
    run(AffineOp<T, true, true>{x, y, stream, residual});
  else if (residual)
    run(AffineOp<T, true, false>{x, y, stream, residual});
  else if (relu)
    run(AffineOp<T, false, true>{x, y, stream});
  else
    run(AffineOp<T>{x, y, stream});
}

#define BNORM_INSTANTIATE(T)                                                  \
  template void forward_inference<T>(const Plan&, const T*, const T*, T*,    \
                                     const Param<T>*, const Param<T>*,       \
                                     const Param<T>*, const Param<T>*, double, \
                                     bool);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
BNORM_INSTANTIATE(Half)
BNORM_INSTANTIATE(BFloat16)
#undef BNORM_INSTANTIATE

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
