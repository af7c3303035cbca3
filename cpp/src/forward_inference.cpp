// Inference forward: y = (x - mean) * gamma / sqrt(var + eps) + beta.
// Allocates nothing: coefficients are computed per run or per channel block
// on the stack.
#include <cmath>

#include "elementwise.hpp"
#include "kernels.hpp"
#include "threading.hpp"

namespace bnorm {
namespace {

template <class T>
inline T scale_of(const T* var, const T* weight, int64_t c, double eps) {
  const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
  return static_cast<T>(gamma / std::sqrt(static_cast<double>(var[c]) + eps));
}

}  // namespace

template <class T>
void forward_inference(const Plan& p, const T* x, T* y, const T* mean,
                       const T* var, const T* weight, const T* bias,
                       double eps) {
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  if (total == 0) return;
  if (p.rows) {
    const int64_t rows_per_task = std::max<int64_t>(
        1, (kTileBytes * 8) / (p.block * int64_t(sizeof(T))));
    const int64_t tiles = ceil_div(p.outer, rows_per_task);
    parallel_for(tiles * p.blocks, total, [&](int64_t t) {
      const int64_t tile = t / p.blocks, blk = t % p.blocks;
      const int64_t r0 = tile * rows_per_task;
      const int64_t nr = std::min(p.outer - r0, rows_per_task);
      const int64_t c0 = blk * p.block, cw = std::min(p.block, C - c0);
      T ml[kChannelBlock], sc[kChannelBlock], sh[kChannelBlock];
      for (int64_t j = 0; j < cw; ++j) {
        ml[j] = T(0);
        sc[j] = scale_of(var, weight, c0 + j, eps);
        sh[j] = bias ? bias[c0 + j] : T(0);
      }
      affine_rows(x + r0 * C + c0, y + r0 * C + c0, nr, C, cw, mean + c0, ml,
                  sc, sh);
    });
  } else {
    parallel_for(p.outer * C, total, [&](int64_t t) {
      const int64_t c = t % C;
      affine_run(x + t * p.inner, y + t * p.inner, p.inner, mean[c], T(0),
                 scale_of(var, weight, c, eps), bias ? bias[c] : T(0));
    });
  }
}

template void forward_inference<float>(const Plan&, const float*, float*,
                                       const float*, const float*,
                                       const float*, const float*, double);
template void forward_inference<double>(const Plan&, const double*, double*,
                                        const double*, const double*,
                                        const double*, const double*, double);

}  // namespace bnorm
