// The forward ops, each a composition of the engine (engine.hpp):
//
//   forward_training  = reduce(moments) + finish(Finish) + apply(AffineOp)
//   moments           = reduce(moments) + finish(store the moments)
//   forward_apply     =                   finish(Finish) + apply(AffineOp)
//   forward_inference =       coefficients per block     + apply(AffineOp)
//
// Statistics are reduced to (count, mean, M2) in double in one pass per unit
// (plan.hpp), as deviations from the unit's first value (from_shifted), and
// merged with Chan's formula in the plan's fixed order. Inference allocates
// nothing: each thread computes the coefficients of a block of channels on
// its stack, then streams over the block's data.
#include <cmath>

#include "engine.hpp"
#include "kernels.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {
namespace {

// Turns a channel's merged moments into its outputs: the coefficients of
// the normalization (mean rounded to T, scale, shift; see AffineOp), the
// saved statistics and the running-statistics update. m is the number of
// values each channel was normalized over (the global batch, for
// forward_apply).
template <class T>
struct Finish {
  const T *weight, *bias;
  T* const* arrays;  // mean, scale, shift
  T *save_mean, *save_invstd, *running_mean, *running_var;
  double m, eps, momentum, correction;

  void one(int64_t c, double mean, double var, double invstd) const {
    const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
    const double beta = bias ? static_cast<double>(bias[c]) : 0.0;
    const T mh = static_cast<T>(mean);
    const T scale = static_cast<T>(gamma * invstd);
    arrays[0][c] = mh;
    arrays[1][c] = scale;
    arrays[2][c] = static_cast<T>(
        beta - (mean - static_cast<double>(mh)) * static_cast<double>(scale));
    if (save_mean) save_mean[c] = static_cast<T>(mean);
    if (save_invstd) save_invstd[c] = static_cast<T>(invstd);
    if (running_mean) {
      running_mean[c] = static_cast<T>((1.0 - momentum) * running_mean[c] +
                                       momentum * mean);
      running_var[c] = static_cast<T>((1.0 - momentum) * running_var[c] +
                                      momentum * var * correction);
    }
  }
  // Channels [c0, c0 + cw), cw <= kChannelBlock, from their merged moments;
  // the divisions and square roots run as one vector loop.
  void operator()(int64_t c0, int64_t cw, const Moments* tot) const {
    double var[kChannelBlock], inv[kChannelBlock];
    for (int64_t j = 0; j < cw; ++j) var[j] = tot[j].m2;
    BNORM_SIMD
    for (int64_t j = 0; j < cw; ++j) {
      const double v = var[j] / m;
      var[j] = v < 0 ? 0.0 : v;  // rounding; NaN stays NaN
      inv[j] = 1.0 / std::sqrt(var[j] + eps);
    }
    for (int64_t j = 0; j < cw; ++j) one(c0 + j, tot[j].mean, var[j], inv[j]);
  }
};

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

// f(op) with the elementwise op y = BN(x) of call a, fused with its
// residual input and activation (ReLU or ReLU6) if it has them.
template <int kAct, class T, class F>
void with_affine_act(const Call<T>& a, bool stream, const F& f) {
  if (a.residual)
    f(AffineOp<T, true, kAct>{a.x, a.residual, a.out, stream});
  else
    f(AffineOp<T, false, kAct>{a.x, nullptr, a.out, stream});
}
template <class T, class F>
void with_affine(const Call<T>& a, const Plan& p, const F& f) {
  const bool stream = stream_output(p.outer * p.channels * p.inner * int64_t(sizeof(T)));
  switch (a.fused_act) {
    case kActRelu6: with_affine_act<kActRelu6>(a, stream, f); break;
    case kActRelu: with_affine_act<kActRelu>(a, stream, f); break;
    default: with_affine_act<kActNone>(a, stream, f);
  }
}

// The coefficient arrays m, s, b of the forward's map, in the workspace.
template <class P>
struct AffineCoefs {
  P* arrays[3];
  AffineCoefs(void* coef, int64_t C) {
    P* base = static_cast<P*>(coef);
    for (int i = 0; i < 3; ++i) arrays[i] = base + i * C;
  }
};

}  // namespace

template <class T>
void forward_training(const Plan& p, const Call<T>& a, const Work& w) {
  using P = Param<T>;
  const AffineCoefs<P> coef(w.coef, p.channels);
  const double m = static_cast<double>(p.outer * p.inner);
  const Finish<P> finish{a.weight, a.bias, coef.arrays, a.save_mean, a.save_invstd,
                         a.running_mean, a.running_var, m, a.eps, a.momentum,
                         a.unbiased ? m / (m - 1) : 1.0};
  const StoredCoefs<P, 3> fill{coef.arrays};
  const MomentsReducer<T> red{a.x};
  with_affine(a, p, [&](const auto& op) {
    using Op = std::decay_t<decltype(op)>;
    const Apply<T, Op, StoredCoefs<P, 3>> apply{op, fill};
    const int64_t block = planar_block<decltype(red), decltype(apply)>(p, w.threads);
    run_engine(p, red, finish, apply, true, block, true, w);
  });
}

template <class T>
void moments(const Plan& p, const Call<T>& a, const Work& w) {
  // Planar data: a thread takes blocks of channels whole, which reads each
  // outer index's runs of the block as one span (with no map to follow,
  // whether the block fits in cache does not matter).
  const MomentsReducer<T> red{a.x};
  const int64_t block = p.whole_block(w.threads, red.kInBytes, red.kInBytes, INT64_MAX / 8);
  run_engine(p, red, StoreResults{a.out_mean, a.out_m2}, NoApply(), false, block, true, w);
}

template <class T>
void forward_apply(const Plan& p, const Call<T>& a, const Work& w) {
  using P = Param<T>;
  const AffineCoefs<P> coef(w.coef, p.channels);
  const double m = a.count;
  const Finish<P> finish{a.weight, a.bias, coef.arrays, a.save_mean, a.save_invstd,
                         a.running_mean, a.running_var, m, a.eps, a.momentum,
                         a.unbiased ? m / (m - 1) : 1.0};
  // the global moments stand for the reduction's result
  Moments tot[kChannelBlock];
  for (int64_t c0 = 0; c0 < p.channels; c0 += kChannelBlock) {
    const int64_t cw = std::min(kChannelBlock, p.channels - c0);
    for (int64_t j = 0; j < cw; ++j) tot[j] = Moments{m, a.in_mean[c0 + j], a.in_m2[c0 + j]};
    finish(c0, cw, tot);
  }
  const int64_t total = p.outer * p.channels * p.inner;
  if (total == 0) return;
  const StoredCoefs<P, 3> fill{coef.arrays};
  with_affine(a, p, [&](const auto& op) {
    parallel(w.threads, [&](int tid, int n) { sweep<T>(p, op, fill, tid, n); });
  });
}

template <class T>
void forward_inference(const Plan& p, const Call<T>& a, const Work& w) {
  if (p.outer * p.channels * p.inner == 0) return;
  const InferenceCoefs<Param<T>> fill{a.mean, a.var, a.weight, a.bias, a.eps};
  with_affine(a, p, [&](const auto& op) {
    parallel(w.threads, [&](int tid, int n) { sweep<T>(p, op, fill, tid, n); });
  });
}

BNORM_INSTANTIATE_KERNEL(forward_training)
BNORM_INSTANTIATE_KERNEL(moments)
BNORM_INSTANTIATE_KERNEL(forward_apply)
BNORM_INSTANTIATE_KERNEL(forward_inference)

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
