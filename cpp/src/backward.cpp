// The backward ops, each a composition of the engine (engine.hpp):
//
//   backward       = reduce(sums) + finish(BackFinish) + apply(the dx map)
//   backward_sums  = reduce(sums) + finish(store the sums)
//   backward_apply =                finish(BackFinish) + apply(DxOp)
//
// dbias = sum(g), dweight = invstd * sum(g * (x - mean)), reduced in double;
// dx = (g * k - r) - (x - mean) * q with per-channel k, q, r (or g * k with
// frozen statistics). g is dy, or dy behind the ReLU of a fused forward
// (mask.hpp), which the fused backward also writes to dresidual.
#include <cmath>
#include <type_traits>

#include "engine.hpp"
#include "kernels.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {
namespace {

// Channel c's coefficients of dx (k, r, mean, q: see DxOp) and its
// gradients of weight and bias, from its sums over m values.
template <class T>
struct BackFinish {
  const T *mean, *invstd, *weight;
  T* const* arrays;
  T *dweight, *dbias;
  double m;
  bool frozen;
  void one(int64_t c, const Sums& s) const {
    const double is = static_cast<double>(invstd[c]);
    const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
    const double k = gamma * is;
    arrays[0][c] = static_cast<T>(k);
    arrays[1][c] = frozen ? T(0) : static_cast<T>(k * s.g / m);
    arrays[2][c] = mean[c];
    arrays[3][c] = frozen ? T(0) : static_cast<T>(k * is * is * s.gx / m);
    if (dbias) dbias[c] = static_cast<T>(s.g);
    if (dweight) dweight[c] = static_cast<T>(s.gx * is);
  }
};

// (BackFinish over channels [c0, c0 + cw), for the engine)
template <class P>
struct BackFinishBlock {
  BackFinish<P> f;
  void operator()(int64_t c0, int64_t cw, const Sums* tot) const {
    for (int64_t j = 0; j < cw; ++j) f.one(c0 + j, tot[j]);
  }
};

// The coefficient arrays of the dx maps, in the workspace: k, r, mean, q;
// then the forward's m, s, b for a recomputed mask, and the interval of x
// where that mask is open (open_interval).
template <class P>
struct DxCoefs {
  P* arrays[9];
  DxCoefs(void* coef, int64_t C, int k) {
    P* base = static_cast<P*>(coef);
    for (int i = 0; i < 9; ++i) arrays[i] = i < k ? base + i * C : nullptr;
  }
};

// Each channel's interval of x where the mask from x is open, into lo and
// hi; false (and the formula is used) if some channel has none, or for
// double data.
template <int M, class P>
bool mask_intervals(const P* fm, const P* fs, const P* fb, int64_t C, P* lo, P* hi) {
  if constexpr (!std::is_same_v<P, float>) {
    (void)fm, (void)fs, (void)fb, (void)C, (void)lo, (void)hi;
    return false;
  } else {
    for (int64_t c = 0; c < C; ++c)
      if (!open_interval<M>(fm[c], fs[c], fb[c], lo + c, hi + c)) return false;
    return true;
  }
}

// Values per channel from which a mask from x is decided by intervals.
constexpr double kRangedMinValues = 64;

// backward with ReLU mask M and the dx map `op` (plain dx, frozen dx, or
// the fused op with dres).
template <int M, class T, class Op>
void backward_with(const Plan& p, const Call<T>& a, const Work& w, Op op) {
  using P = Param<T>;
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  const double m = static_cast<double>(p.outer * p.inner);
  const bool write = a.out || a.dresidual;
  const bool need_sums = total > 0 && (a.dweight || a.dbias || (write && !a.frozen));
  const DxCoefs<P> coef(w.coef, C, from_x(M) ? 9 : 4);
  SumsReducer<M, T> red{a.dy, a.x, a.mean, MaskArgs<T>{a.y}};
  if (from_x(M)) {
    // the forward's coefficients from the saved statistics (AffineOp):
    // y = (x - mean) * (gamma * invstd) + beta
    for (int64_t c = 0; c < C; ++c) {
      const double gamma = a.weight ? static_cast<double>(a.weight[c]) : 1.0;
      coef.arrays[4][c] = a.mean[c];
      coef.arrays[5][c] = static_cast<P>(gamma * static_cast<double>(a.invstd[c]));
      coef.arrays[6][c] = a.bias ? a.bias[c] : P(0);
    }
    red.mask.fm = coef.arrays[4];
    red.mask.fs = coef.arrays[5];
    red.mask.fb = coef.arrays[6];
  }
  // The reductions and the dx map decide the mask by each channel's interval
  // of x where it is open, where every channel has one (the formula's
  // decisions, two comparisons per value instead of the formula in double);
  // not for a few values per channel, where finding the intervals (about
  // ten evaluations of the formula per channel, on one thread) would cost
  // more than it saves.
  P* map_arrays[7];
  for (int i = 0; i < 7; ++i) map_arrays[i] = coef.arrays[i];
  if constexpr (from_x(M)) {
    if (total > 0 && (write || need_sums) && m >= kRangedMinValues &&
        mask_intervals<M>(coef.arrays[4], coef.arrays[5], coef.arrays[6], C, coef.arrays[7],
                          coef.arrays[8])) {
      op.ranged = true;
      map_arrays[4] = coef.arrays[7];
      map_arrays[5] = coef.arrays[8];
      red.mask.lo = coef.arrays[7];
      red.mask.hi = coef.arrays[8];
    }
  }
  const StoredCoefs<P, Op::K> fill{map_arrays};
  const Apply<T, Op, StoredCoefs<P, Op::K>> apply{op, fill};
  const BackFinishBlock<P> finish{
      {a.mean, a.invstd, a.weight, coef.arrays, a.dweight, a.dbias, m, a.frozen}};
  const int64_t block = need_sums && write
                            ? planar_block<decltype(red), decltype(apply)>(p, w.threads)
                            : 0;
  run_engine(p, red, finish, apply, write && total > 0, block, need_sums, w);
}

template <int M, bool kRes, class T>
void backward_masked(const Plan& p, const Call<T>& a, const Work& w) {
  if (a.frozen)
    backward_with<M>(p, a, w,
                     DxMaskOp<T, M, true, kRes>{{}, a.dy, a.x, a.y, a.out, a.dresidual});
  else
    backward_with<M>(p, a, w,
                     DxMaskOp<T, M, false, kRes>{{}, a.dy, a.x, a.y, a.out, a.dresidual});
}

// dres = g, the dy that the activation let through (read from y), over
// the whole tensor in one pass.
template <int M, class T>
void gradient_behind(const Call<T>& a, int64_t total, const Work& w) {
  using P = Param<T>;
  T* const dres = a.dresidual;
  const T* const ys = a.y;
  const T* const dys = a.dy;
  parallel(w.threads, [&](int tid, int n) {
    int64_t b, e;
    share(total, tid, n, &b, &e);
    // (the pointers in locals: read through `a` in the loop, they were
    // reloaded per value, which kept it scalar: 4 GB/s)
    T* const d = dres + b;
    const T* const yb = ys + b;
    const T* const gb = dys + b;
    each(d, e - b, [&](int64_t i) {
      st(d, i, mask_open<M>(static_cast<double>(ld(yb, i))) ? static_cast<P>(ld(gb, i)) : P(0));
    });
  });
}

// The activated backward (ReLU, or ReLU6 with kClip = kClip6): its mask from
// y when given, else recomputed from x.
template <int kClip, class T>
void backward_activated(const Plan& p, const Call<T>& a, const Work& w) {
  if (a.y && a.dresidual)
    backward_masked<kMaskY | kClip, true>(p, a, w);
  else if (a.y)
    backward_masked<kMaskY | kClip, false>(p, a, w);
  else if (a.dresidual)
    backward_masked<kMaskX | kClip, true>(p, a, w);
  else
    backward_masked<kMaskX | kClip, false>(p, a, w);
}

}  // namespace

// A fused activation: g = dy where the forward's output y > 0 (y given) or
// where the recomputed pre-activation is > 0 (y null); with the ReLU6 also
// only where it is < 6. dresidual, if given, receives g.
template <class T>
void backward(const Plan& p, const Call<T>& a, const Work& w) {
  const int64_t total = p.outer * p.channels * p.inner;
  if (a.fused_act == kActNone && !a.dresidual) {
    const bool stream = stream_output(total * int64_t(sizeof(T)));
    if (a.frozen)
      backward_with<kNoMask>(p, a, w, ScaleOp<T>{a.dy, nullptr, a.out, stream});
    else
      backward_with<kNoMask>(p, a, w, DxOp<T>{a.dy, a.x, a.out, stream});
    return;
  }
  if (a.fused_act != kActNone && a.y && a.dresidual && a.dresidual != a.x &&
      stream_output(total * int64_t(sizeof(T)))) {
    // Too large for the cache: dres = g is an output anyway, so write it in
    // one pass and run the plain backward on it (whose dx pass streams);
    // the same arithmetic as the one-pass form, so the same bits.
    if (a.fused_act == kActRelu6)
      gradient_behind<kMaskY6>(a, total, w);
    else
      gradient_behind<kMaskY>(a, total, w);
    Call<T> plain = a;
    plain.dy = a.dresidual;
    plain.y = nullptr;
    plain.dresidual = nullptr;
    plain.fused_act = kActNone;
    backward(p, plain, w);
    return;
  }
  if (a.fused_act == kActNone)
    backward_masked<kNoMask, true>(p, a, w);
  else if (a.fused_act == kActRelu6)
    backward_activated<kClip6>(p, a, w);
  else
    backward_activated<0>(p, a, w);
}

template <class T>
void backward_sums(const Plan& p, const Call<T>& a, const Work& w) {
  // Planar data: blocks of channels whole per thread (as in moments()).
  const SumsReducer<kNoMask, T> red{a.dy, a.x, a.mean, MaskArgs<T>()};
  const int64_t block = p.whole_block(w.threads, red.kInBytes, red.kInBytes, INT64_MAX / 8);
  run_engine(p, red, StoreResults{a.out_sum_dy, a.out_sum_dy_xmu}, NoApply(), false, block,
             true, w);
}

template <class T>
void backward_apply(const Plan& p, const Call<T>& a, const Work& w) {
  using P = Param<T>;
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  const DxCoefs<P> coef(w.coef, C, 4);
  const BackFinish<P> finish{a.mean,      a.invstd, a.weight, coef.arrays,
                             a.dweight,   a.dbias,  a.count,  false};
  for (int64_t c = 0; c < C; ++c) finish.one(c, Sums{a.in_sum_dy[c], a.in_sum_dy_xmu[c]});
  if (!a.out || total == 0) return;
  const DxOp<T> op{a.dy, a.x, a.out, stream_output(total * int64_t(sizeof(T)))};
  const StoredCoefs<P, 4> fill{coef.arrays};
  parallel(w.threads, [&](int tid, int n) { sweep<T>(p, op, fill, tid, n); });
}

BNORM_INSTANTIATE_KERNEL(backward)
BNORM_INSTANTIATE_KERNEL(backward_sums)
BNORM_INSTANTIATE_KERNEL(backward_apply)

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
