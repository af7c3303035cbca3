// The backward of y = act(BN(x) + r) from the output y alone (In-Place
// Activated Batch Norm, Rota Bulo et al. 2018; r an optional residual the
// backward reads): x is not needed, because with an invertible activation
// and a nonzero scale gamma, y gives back
//   z    = act^-1(y) - r               (the batch norm's output)
//   xhat = (z - beta) / gamma          (the normalized input)
//   g    = dy * act'(z)                (the gradient reaching the batch norm)
// from which, per channel over its m values,
//   dbias = sum(g),  dweight = sum(g * xhat),
//   dx    = gamma * invstd * (g - dbias / m - xhat * dweight / m)
// (or gamma * invstd * g with frozen statistics), and dr = g.
//
// reduce(FromOutputReducer) + finish(FromOutputFinish) + apply(FromOutputOp)
// on the engine (engine.hpp). Per value everything is computed in
// StatDev<T> (simd.hpp: float for half-precision data, whose math is
// float32's; double for float32 and float64) from y, dy and per-channel coefficients,
// the same way in both passes; the sums are accumulated in double (for
// halves g * xhat is a product of two floats, exact there) in a fixed order
// (sixteen interleaved partial sums per planar run for halves, eight
// otherwise; one per channel along the rows of a channels-last tile), so the
// instruction sets and thread counts all give the same bits. (Float math
// for float32 data too was measured: 1.2-1.5x faster on tensors in cache,
// but 0.4-0.75x on 13-51 MB ones, NCHW and NHWC; not taken.)
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "engine.hpp"
#include "kernels.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {
namespace {

// z = act^-1(y) and the derivative act'(z), as a function of y; a is the
// activation's parameter and ia = 1 / a, rounded once per call (the leaky
// ReLU's inverse multiplies by it: a select of products vectorizes, where
// a division in a branch, or under a mask, kept these loops slow). In D
// (StatDev<T>); the ELU's logarithm in double, rounded to D once.
template <int A, class D>
inline void invert(D yv, D a, D ia, D* z, D* d) {
  if constexpr (A == BNORM_ACT_LEAKY_RELU) {
    const bool pos = yv > D(0);
    *z = yv * (pos ? D(1) : ia);
    *d = pos ? D(1) : a;
  } else if constexpr (A == BNORM_ACT_ELU) {
    // y = a * (exp(z) - 1) for z <= 0, so z = log1p(y / a) and
    // act'(z) = a * exp(z) = y + a
    const bool pos = yv > D(0);
    *z = pos ? yv : static_cast<D>(std::log1p(static_cast<double>(yv) / static_cast<double>(a)));
    *d = pos ? D(1) : yv + a;
  } else {
    (void)a;
    *z = yv;
    *d = D(1);
  }
  (void)ia;
}

// Per value: g and xhat from dy, y, the residual r the forward added
// before the activation (0 without one) and the channel's 1 / gamma and
// beta.
template <int A, class D>
inline void recover(D dyv, D yv, D rv, D a, D ia, D ig, D beta, D* g, D* xhat) {
  D z, d;
  invert<A>(yv, a, ia, &z, &d);
  *g = dyv * d;
  *xhat = ((z - rv) - beta) * ig;
}

// r[i] in D, or 0 without a residual.
template <class D, bool kRes, class T>
inline D res_at(const T* r, int64_t i) {
  if constexpr (kRes) return static_cast<D>(ld(r, i));
  (void)r, (void)i;
  return D(0);
}

// The coefficient arrays, in the workspace: k = gamma * invstd, r = k *
// sum(g) / m, q = k * sum(g * xhat) / m, then 1 / gamma and beta (set
// before the reduction, which reads them).
constexpr int kFromOutputCoefs = 5;

template <int A, bool kRes, class T>
struct FromOutputReducer {
  using Acc = Sums;
  static constexpr int64_t kInBytes = (kRes ? 3 : 2) * sizeof(T);  // dy, y (and r)
  using P = Param<T>;
  using D = StatDev<T>;
  const T* dy;
  const T* y;
  const T* res;
  const P* ig;
  const P* beta;
  D a, ia;

  void group(const Plan& p, int64_t c0, int64_t cw, int64_t g, Sums* out, double*) const {
    int64_t u0, u1;
    p.group_range(g, &u0, &u1);
    if (p.rows) {
      // channels along the row, each its own chain in row order (in blocks
      // of kChannelBlock: the engine may ask for all channels at once)
      int64_t r0, r1, unused;
      p.rows_unit(u0, &r0, &unused);
      p.rows_unit(u1 - 1, &unused, &r1);
      const int64_t C = p.channels;
      double sa[kChannelBlock], sb[kChannelBlock];
      D cig[kChannelBlock], cb[kChannelBlock];
      for (int64_t b0 = 0; b0 < cw; b0 += kChannelBlock) {
        const int64_t bw = std::min(kChannelBlock, cw - b0), cs = c0 + b0;
        for (int64_t j = 0; j < bw; ++j) {
          sa[j] = sb[j] = 0.0;
          cig[j] = static_cast<D>(ig[cs + j]);
          cb[j] = static_cast<D>(beta[cs + j]);
        }
        for (int64_t r = r0; r < r1; ++r) {
          const T* gr = dy + r * C + cs;
          const T* yr = y + r * C + cs;
          const T* rr = kRes ? res + r * C + cs : nullptr;
          BNORM_SIMD
          for (int64_t j = 0; j < bw; ++j) {
            D gv, xh;
            recover<A>(static_cast<D>(ld(gr, j)), static_cast<D>(ld(yr, j)),
                       res_at<D, kRes>(rr, j), a, ia, cig[j], cb[j], &gv, &xh);
            sa[j] += static_cast<double>(gv);
            sb[j] = add_product<D>(sb[j], gv, xh);
          }
        }
        for (int64_t j = 0; j < bw; ++j) out[b0 + j] = Sums{sa[j], sb[j]};
      }
      return;
    }
    const int64_t stride = p.channels * p.inner;
    for (int64_t j = 0; j < cw; ++j) {
      const int64_t c = c0 + j;
      const D cig = static_cast<D>(ig[c]), cb = static_cast<D>(beta[c]);
      constexpr int L = sizeof(D) == 4 ? 16 : 8;
      double la[L] = {}, lb[L] = {};
      for (int64_t u = u0; u < u1; ++u) {
        int64_t o0, o1, lo, hi;
        p.planar_unit(u, &o0, &o1, &lo, &hi);
        for (int64_t o = o0; o < o1; ++o) {
          const int64_t off = o * stride + c * p.inner + lo;
          const T* gr = dy + off;
          const T* yr = y + off;
          const T* rr = kRes ? res + off : nullptr;
          const int64_t n = hi - lo;
          int64_t i = 0;
          for (; i + L <= n; i += L) {
            // (across the partial sums: a vector operation or two each)
            BNORM_SIMD
            for (int k = 0; k < L; ++k) {
              D gv, xh;
              recover<A>(static_cast<D>(ld(gr, i + k)), static_cast<D>(ld(yr, i + k)),
                         res_at<D, kRes>(rr, i + k), a, ia, cig, cb, &gv, &xh);
              la[k] += static_cast<double>(gv);
              lb[k] = add_product<D>(lb[k], gv, xh);
            }
          }
          for (int k = 0; i < n; ++i, ++k) {
            D gv, xh;
            recover<A>(static_cast<D>(ld(gr, i)), static_cast<D>(ld(yr, i)),
                       res_at<D, kRes>(rr, i), a, ia, cig, cb, &gv, &xh);
            la[k] += static_cast<double>(gv);
            lb[k] = add_product<D>(lb[k], gv, xh);
          }
        }
      }
      if constexpr (L == 16)
        for (int k = 0; k < 8; ++k) la[k] += la[k + 8], lb[k] += lb[k + 8];
      out[j] = Sums{((la[0] + la[1]) + (la[2] + la[3])) + ((la[4] + la[5]) + (la[6] + la[7])),
                    ((lb[0] + lb[1]) + (lb[2] + lb[3])) + ((lb[4] + lb[5]) + (lb[6] + lb[7]))};
    }
  }
};

// Channel c's coefficients of dx and its gradients of weight and bias.
template <class P>
struct FromOutputFinish {
  const P *invstd, *weight;
  P* const* arrays;
  P *dweight, *dbias;
  double m;
  bool frozen;
  void operator()(int64_t c0, int64_t cw, const Sums* tot) const {
    for (int64_t j = 0; j < cw; ++j) {
      const int64_t c = c0 + j;
      const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
      const double k = gamma * static_cast<double>(invstd[c]);
      arrays[0][c] = static_cast<P>(k);
      arrays[1][c] = frozen ? P(0) : static_cast<P>(k * tot[j].g / m);
      arrays[2][c] = frozen ? P(0) : static_cast<P>(k * tot[j].gx / m);
      if (dbias) dbias[c] = static_cast<P>(tot[j].g);
      if (dweight) dweight[c] = static_cast<P>(tot[j].gx);
    }
  }
};

// dx = (g * k - r) - xhat * q from dy and y (and the residual), and dres =
// g; dx and dres may each be one of the inputs: each value's inputs are
// read before its outputs are written. dx may be null (dres only).
template <int A, bool kRes, class T>
struct FromOutputOp : SpanMap<FromOutputOp<A, kRes, T>, Param<T>, kFromOutputCoefs> {
  static constexpr int K = kFromOutputCoefs;
  static constexpr int kArrays = kRes ? 5 : 3;  // dy, y, dx (, r, dres)
  using P = Param<T>;
  using D = StatDev<T>;
  const T* dy;
  const T* y;
  const T* res;
  T* dx;
  T* dres;
  D a, ia;

  template <class Coef>
  void span(int64_t off, int64_t n, const Coef& k) const {
    const T* g = dy + off;
    const T* ys = y + off;
    const T* rs = kRes ? res + off : nullptr;
    T* d = dx ? dx + off : nullptr;
    T* e = dres ? dres + off : nullptr;
    // one loop per set of outputs (no branch on them inside a loop)
    const auto value = [&](int64_t i, D* gv, D* v) BNORM_INLINE_LAMBDA {
      D xh;
      recover<A>(static_cast<D>(ld(g, i)), static_cast<D>(ld(ys, i)), res_at<D, kRes>(rs, i), a,
                 ia, static_cast<D>(k(3, i)), static_cast<D>(k(4, i)), gv, &xh);
      *v = (*gv * static_cast<D>(k(0, i)) - static_cast<D>(k(1, i))) - xh * static_cast<D>(k(2, i));
    };
    if (d && e) {
      each(d, n, [&](int64_t i) {
        D gv, v;
        value(i, &gv, &v);
        st(e, i, static_cast<P>(gv));
        st(d, i, static_cast<P>(v));
      });
    } else if (d) {
      each(d, n, [&](int64_t i) {
        D gv, v;
        value(i, &gv, &v);
        st(d, i, static_cast<P>(v));
      });
    } else if (e) {
      each(e, n, [&](int64_t i) {
        D gv, v;
        value(i, &gv, &v);
        st(e, i, static_cast<P>(gv));
      });
    }
  }
};

template <int A, bool kRes, class T>
void from_output(const Plan& p, const Call<T>& a, const Work& w) {
  using P = Param<T>;
  const int64_t C = p.channels;
  const int64_t total = p.outer * C * p.inner;
  P* arrays[kFromOutputCoefs];
  for (int i = 0; i < kFromOutputCoefs; ++i) arrays[i] = static_cast<P*>(w.coef) + i * C;
  for (int64_t c = 0; c < C; ++c) {
    const double gamma = a.weight ? static_cast<double>(a.weight[c]) : 1.0;
    arrays[3][c] = static_cast<P>(1.0 / gamma);
    arrays[4][c] = a.bias ? a.bias[c] : P(0);
  }
  const double m = static_cast<double>(p.outer * p.inner);
  const bool write = (a.out != nullptr || a.dresidual != nullptr) && total > 0;
  const bool need_sums =
      total > 0 && (a.dweight || a.dbias || (a.out != nullptr && !a.frozen));
  using D = StatDev<T>;
  const D ap = static_cast<D>(a.act_param);
  const D ia = A == BNORM_ACT_LEAKY_RELU ? static_cast<D>(1.0 / a.act_param) : D(0);
  const FromOutputReducer<A, kRes, T> red{a.dy, a.y, a.residual, arrays[3], arrays[4], ap, ia};
  const FromOutputFinish<P> finish{a.invstd, a.weight, arrays, a.dweight, a.dbias, m, a.frozen};
  const FromOutputOp<A, kRes, T> op{{}, a.dy, a.y, a.residual, a.out, a.dresidual, ap, ia};
  const StoredCoefs<P, kFromOutputCoefs> fill{arrays};
  const Apply<T, FromOutputOp<A, kRes, T>, StoredCoefs<P, kFromOutputCoefs>> apply{op, fill};
  const int64_t block =
      need_sums && write
          ? planar_block<decltype(red), decltype(apply)>(p, w.threads)
          : 0;
  run_engine(p, red, finish, apply, write, block, need_sums, w);
}

}  // namespace

template <class T>
void backward_from_output(const Plan& p, const Call<T>& a, const Work& w) {
  const auto run = [&](auto act) {
    constexpr int A = decltype(act)::value;
    if (a.residual)
      from_output<A, true>(p, a, w);
    else
      from_output<A, false>(p, a, w);
  };
  switch (a.act) {
    case BNORM_ACT_LEAKY_RELU: run(std::integral_constant<int, BNORM_ACT_LEAKY_RELU>()); break;
    case BNORM_ACT_ELU: run(std::integral_constant<int, BNORM_ACT_ELU>()); break;
    default: run(std::integral_constant<int, BNORM_ACT_IDENTITY>()); break;
  }
}

BNORM_INSTANTIATE_KERNEL(backward_from_output)

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
