// Inference forward: y = (x - mean) * gamma / sqrt(var + eps) + beta.
// Allocates nothing: each thread computes the coefficients of a block of
// channels on its stack, then streams over the block's data.
#include <cmath>

#include "elementwise.hpp"
#include "kernels.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {
namespace {

template <class T>
struct InferenceCoefs {
  const T *mean, *var, *weight, *bias;
  double eps;
  void operator()(int64_t c0, int64_t cw, T* const* k) const {
    for (int64_t j = 0; j < cw; ++j) {
      const int64_t c = c0 + j;
      const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
      k[0][j] = mean[c];
      k[1][j] = static_cast<T>(gamma / std::sqrt(static_cast<double>(var[c]) + eps));
      k[2][j] = bias ? bias[c] : T(0);
    }
  }
};

}  // namespace

template <class T>
void forward_inference(const Plan& p, const T* x, T* y, const T* mean,
                       const T* var, const T* weight, const T* bias,
                       double eps) {
  const int64_t total = p.outer * p.channels * p.inner;
  if (total == 0) return;
  const AffineOp<T> op{x, y, stream_output(total * int64_t(sizeof(T)))};
  const InferenceCoefs<T> fill{mean, var, weight, bias, eps};
  parallel(threads_for(total),
           [&](int tid, int n) { sweep<T>(p, op, fill, tid, n); });
}

template void forward_inference<float>(const Plan&, const float*, float*,
                                       const float*, const float*,
                                       const float*, const float*, double);
template void forward_inference<double>(const Plan&, const double*, double*,
                                        const double*, const double*,
                                        const double*, const double*, double);

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
