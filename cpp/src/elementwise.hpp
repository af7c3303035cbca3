// The elementwise passes and the sweep that drives them over a tensor.
#pragma once

#include <cstdint>

#include "plan.hpp"
#include "mask.hpp"
#include "simd.hpp"
#include "threading.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {

// Bytes of per-channel coefficients a sweep keeps on the stack.
constexpr int64_t kCoefBytes = 32 * 1024;
// Rows of wide channels-last tensors are swept in tiles of at least this
// size and this many rows (so that refilling the coefficients of each block
// of channels per tile costs little).
constexpr int64_t kSweepTileBytes = 256 * 1024;
constexpr int64_t kSweepTileRows = 128;
// Runs at least this long are visited one by one (coefficients per run).
constexpr int64_t kLongRun = 256;
// Streaming stores pay off on long contiguous runs (or wide rows) only;
// measured here, they slow down short ones, which therefore store normally.
constexpr int64_t kStreamMinRun = 256;

// Normalization: y = (x - m) * s + b, per channel. m is the mean rounded to
// T; the rounding error e = mean - m is folded into b = beta - e * s (in
// double), which keeps x - mean accurate in float even for data far from
// zero (offset >> std) at the cost of three operations per value.
//
// Fused forms (kRes, kRelu): y = relu((x - m) * s + b + z), z the residual
// input; relu(v) = v < 0 ? 0 : v keeps a NaN a NaN.
template <class T, bool kRes = false, bool kRelu = false>
struct AffineOp {
  static constexpr int K = 3;  // m, s, b
  static constexpr int kArrays = kRes ? 3 : 2;  // tensors read or written (x, z, y)
  using P = Param<T>;          // coefficients and arithmetic
  const T* x;
  T* y;
  bool stream;  // non-temporal stores for y (stream.hpp)
  const T* z = nullptr;  // residual (kRes)

  // The fused forms and half-precision data take plain loops (no
  // streaming stores, no four-row form).
  static constexpr bool kSimple = kRes || kRelu || kIsHalf<T>;
  // the epilogue of value v at z[i]
  static P epi(P v, const T* zs, int64_t i) {
    if (kRes) v = v + ld(zs, i);
    if (kRelu) v = v < P(0) ? P(0) : v;
    return v;
  }

  void run(int64_t off, int64_t n, P* const* k, int64_t j) const {
    const P m = k[0][j], s = k[1][j], b = k[2][j];
    const T* xs = x + off;
    T* ys = y + off;
    if constexpr (kSimple) {
      const T* zs = kRes ? z + off : nullptr;
      each(ys, n, [&](int64_t i) { st(ys, i, epi((ld(xs, i) - m) * s + b, zs, i)); });
    } else {
#ifdef BNORM_HAVE_STREAM
      if (stream && n * int64_t(sizeof(T)) >= kStreamMinRun) {
        stream_out(ys, n, [&](int64_t i) { return (sload(xs + i) - m) * s + b; },
                   [&](int64_t i) { return (xs[i] - m) * s + b; });
        return;
      }
#endif
      each(ys, n, [&](int64_t i) { ys[i] = (xs[i] - m) * s + b; });
    }
  }
  void row(int64_t off, int64_t cw, P* const* k) const {
    const T* xs = x + off;
    T* ys = y + off;
    const P *m = k[0], *s = k[1], *b = k[2];
    if constexpr (kSimple) {
      const T* zs = kRes ? z + off : nullptr;
      each(ys, cw, [&](int64_t j) { st(ys, j, epi((ld(xs, j) - m[j]) * s[j] + b[j], zs, j)); });
    } else {
      row_plain(xs, ys, cw, m, s, b);
    }
  }
  void row_plain(const T* xs, T* ys, int64_t cw, const P* m, const P* s, const P* b) const {
#ifdef BNORM_HAVE_STREAM
    if (stream && cw * int64_t(sizeof(T)) >= kStreamMinRun) {
      stream_out(ys, cw,
                 [&](int64_t j) { return (sload(xs + j) - sload(m + j)) * sload(s + j) + sload(b + j); },
                 [&](int64_t j) { return (xs[j] - m[j]) * s[j] + b[j]; });
      return;
    }
#endif
    each(ys, cw, [&](int64_t j) { ys[j] = (xs[j] - m[j]) * s[j] + b[j]; });
  }
  // Four rows of stride ld at once, loading the coefficients once.
  bool row4(int64_t off, int64_t ld, int64_t cw, P* const* k) const {
    if constexpr (kSimple) {
      (void)off, (void)ld, (void)cw, (void)k;
      return false;
    } else {
      return row4_plain(off, ld, cw, k);
    }
  }
  bool row4_plain(int64_t off, int64_t ld, int64_t cw, P* const* k) const {
    if (stream && cw * int64_t(sizeof(T)) >= kStreamMinRun) return false;
    const T* xs = x + off;
    T* ys = y + off;
    const T *m = k[0], *s = k[1], *b = k[2];
    each(ys, cw, [&](int64_t j) {
      // All loads before any store: when ld spans a multiple of 4 KiB and y
      // sits at x's offset within a page, a load after a store to the same
      // page offset waits for it (4K aliasing).
      const T x0 = xs[j], x1 = xs[j + ld], x2 = xs[j + 2 * ld], x3 = xs[j + 3 * ld];
      const T mj = m[j], sj = s[j], bj = b[j];
      ys[j] = (x0 - mj) * sj + bj;
      ys[j + ld] = (x1 - mj) * sj + bj;
      ys[j + 2 * ld] = (x2 - mj) * sj + bj;
      ys[j + 3 * ld] = (x3 - mj) * sj + bj;
    });
    return true;
  }
};

// Backward, training statistics: dx = (g * k - r) - (x - mean) * q.
template <class T>
struct DxOp {
  static constexpr int K = 4;  // k, r, mean, q
  static constexpr int kArrays = 3;  // dy, x, dx
  using P = Param<T>;
  const T* dy;
  const T* x;
  T* dx;
  bool stream;

  void run(int64_t off, int64_t n, P* const* c, int64_t j) const {
    if constexpr (kIsHalf<T>) {
      const P k = c[0][j], r = c[1][j], m = c[2][j], q = c[3][j];
      const T* g = dy + off;
      const T* xs = x + off;
      T* d = dx + off;
      each(d, n, [&](int64_t i) { st(d, i, (ld(g, i) * k - r) - (ld(xs, i) - m) * q); });
    } else {
      run_plain(off, n, c, j);
    }
  }
  void run_plain(int64_t off, int64_t n, P* const* c, int64_t j) const {
    const T k = c[0][j], r = c[1][j], m = c[2][j], q = c[3][j];
    const T* g = dy + off;
    const T* xs = x + off;
    T* d = dx + off;
#ifdef BNORM_HAVE_STREAM
    if (stream && n * int64_t(sizeof(T)) >= kStreamMinRun) {
      stream_out(d, n,
                 [&](int64_t i) { return (sload(g + i) * k - r) - (sload(xs + i) - m) * q; },
                 [&](int64_t i) { return (g[i] * k - r) - (xs[i] - m) * q; });
      return;
    }
#endif
    each(d, n, [&](int64_t i) { d[i] = (g[i] * k - r) - (xs[i] - m) * q; });
  }
  void row(int64_t off, int64_t cw, P* const* c) const {
    if constexpr (kIsHalf<T>) {
      const T* g = dy + off;
      const T* xs = x + off;
      T* d = dx + off;
      const P *k = c[0], *r = c[1], *m = c[2], *q = c[3];
      each(d, cw, [&](int64_t j) {
        st(d, j, (ld(g, j) * k[j] - r[j]) - (ld(xs, j) - m[j]) * q[j]);
      });
    } else {
      row_plain(off, cw, c);
    }
  }
  void row_plain(int64_t off, int64_t cw, P* const* c) const {
    const T* g = dy + off;
    const T* xs = x + off;
    T* d = dx + off;
    const T *k = c[0], *r = c[1], *m = c[2], *q = c[3];
    each(d, cw, [&](int64_t j) { d[j] = (g[j] * k[j] - r[j]) - (xs[j] - m[j]) * q[j]; });
  }
  bool row4(int64_t off, int64_t ld, int64_t cw, P* const* c) const {
    if constexpr (kIsHalf<T>) {
      (void)off, (void)ld, (void)cw, (void)c;
      return false;
    } else {
      return row4_plain(off, ld, cw, c);
    }
  }
  bool row4_plain(int64_t off, int64_t ld, int64_t cw, P* const* c) const {
    if (stream && cw * int64_t(sizeof(T)) >= kStreamMinRun) return false;
    const T* g = dy + off;
    const T* xs = x + off;
    T* d = dx + off;
    const T *k = c[0], *r = c[1], *m = c[2], *q = c[3];
    each(d, cw, [&](int64_t j) {  // loads first (see AffineOp::row4)
      const T g0 = g[j], g1 = g[j + ld], g2 = g[j + 2 * ld], g3 = g[j + 3 * ld];
      const T x0 = xs[j], x1 = xs[j + ld], x2 = xs[j + 2 * ld], x3 = xs[j + 3 * ld];
      const T kj = k[j], rj = r[j], mj = m[j], qj = q[j];
      d[j] = (g0 * kj - rj) - (x0 - mj) * qj;
      d[j + ld] = (g1 * kj - rj) - (x1 - mj) * qj;
      d[j + 2 * ld] = (g2 * kj - rj) - (x2 - mj) * qj;
      d[j + 3 * ld] = (g3 * kj - rj) - (x3 - mj) * qj;
    });
    return true;
  }
};

// Backward, frozen statistics: dx = g * k.
template <class T>
struct ScaleOp {
  static constexpr int K = 1;
  static constexpr int kArrays = 2;  // dy, dx
  using P = Param<T>;
  const T* dy;
  T* dx;
  bool stream;

  void run(int64_t off, int64_t n, P* const* c, int64_t j) const {
    if constexpr (kIsHalf<T>) {
      const P k = c[0][j];
      const T* g = dy + off;
      T* d = dx + off;
      each(d, n, [&](int64_t i) { st(d, i, ld(g, i) * k); });
    } else {
      run_plain(off, n, c, j);
    }
  }
  void run_plain(int64_t off, int64_t n, P* const* c, int64_t j) const {
    const T k = c[0][j];
    const T* g = dy + off;
    T* d = dx + off;
#ifdef BNORM_HAVE_STREAM
    if (stream && n * int64_t(sizeof(T)) >= kStreamMinRun) {
      stream_out(d, n, [&](int64_t i) { return sload(g + i) * k; },
                 [&](int64_t i) { return g[i] * k; });
      return;
    }
#endif
    each(d, n, [&](int64_t i) { d[i] = g[i] * k; });
  }
  void row(int64_t off, int64_t cw, P* const* c) const {
    if constexpr (kIsHalf<T>) {
      const T* g = dy + off;
      T* d = dx + off;
      const P* k = c[0];
      each(d, cw, [&](int64_t j) { st(d, j, ld(g, j) * k[j]); });
    } else {
      row_plain(off, cw, c);
    }
  }
  void row_plain(int64_t off, int64_t cw, P* const* c) const {
    const T* g = dy + off;
    T* d = dx + off;
    const T* k = c[0];
    each(d, cw, [&](int64_t j) { d[j] = g[j] * k[j]; });
  }
  bool row4(int64_t off, int64_t ld, int64_t cw, P* const* c) const {
    if constexpr (kIsHalf<T>) {
      (void)off, (void)ld, (void)cw, (void)c;
      return false;
    } else {
      return row4_plain(off, ld, cw, c);
    }
  }
  bool row4_plain(int64_t off, int64_t ld, int64_t cw, P* const* c) const {
    if (stream && cw * int64_t(sizeof(T)) >= kStreamMinRun) return false;
    const T* g = dy + off;
    T* d = dx + off;
    const T* k = c[0];
    each(d, cw, [&](int64_t j) {  // loads first (see AffineOp::row4)
      const T g0 = g[j], g1 = g[j + ld], g2 = g[j + 2 * ld], g3 = g[j + 3 * ld];
      const T kj = k[j];
      d[j] = g0 * kj;
      d[j + ld] = g1 * kj;
      d[j + 2 * ld] = g2 * kj;
      d[j + 3 * ld] = g3 * kj;
    });
    return true;
  }
};

// Backward fused with a ReLU (and a residual input): g = dy where the mask M
// is open (mask.hpp), else 0; dx = (g * k - r) - (x - mean) * q, or g * k
// with frozen statistics; the residual's gradient dres = g when kRes.
// Coefficients: k, r, mean, q, then fm, fs, fb (the forward's, for kMaskX).
template <class T, int M, bool kFrozen, bool kRes>
struct DxMaskOp {
  static constexpr int K = M == kMaskX ? 7 : 4;
  // dy, x, dx (y, dres)
  static constexpr int kArrays = 3 + (M == kMaskY) + kRes;
  using P = Param<T>;
  const T* dy;
  const T* x;
  const T* y;  // the forward's output (kMaskY)
  T* dx;       // may be null (only dres wanted)
  T* dres;

  // the mask exactly as the reductions decide it (mask.hpp, masked)
  static P gate(P g, P xv, P yv, P m, P s, P b) {
    if (M == kMaskY) return static_cast<double>(yv) > 0.0 ? g : P(0);
    if (M == kMaskX)
      return (static_cast<double>(xv) - static_cast<double>(m)) * static_cast<double>(s) +
                         static_cast<double>(b) > 0.0 ? g : P(0);
    return g;
  }
  void run(int64_t off, int64_t n, P* const* c, int64_t j) const {
    const P k = c[0][j], r = c[1][j], m = c[2][j], q = c[3][j];
    const P fm = M == kMaskX ? c[4][j] : P(0), fs = M == kMaskX ? c[5][j] : P(0),
            fb = M == kMaskX ? c[6][j] : P(0);
    const T* g = dy + off;
    const T* xs = x + off;
    const T* ys = M == kMaskY ? y + off : nullptr;
    T* d = dx ? dx + off : nullptr;
    T* e = kRes ? dres + off : nullptr;
    if (d) {
      each(d, n, [&](int64_t i) {
        // every load before the first store: dres may be x (or dy, or y)
        const P xv = ld(xs, i);
        const P gi = gate(ld(g, i), xv, M == kMaskY ? ld(ys, i) : P(0), fm, fs, fb);
        if (kRes) st(e, i, gi);
        st(d, i, kFrozen ? gi * k : (gi * k - r) - (xv - m) * q);
      });
    } else {
      each(e, n, [&](int64_t i) {
        st(e, i, gate(ld(g, i), ld(xs, i), M == kMaskY ? ld(ys, i) : P(0), fm, fs, fb));
      });
    }
  }
  void row(int64_t off, int64_t cw, P* const* c) const {
    const P *k = c[0], *r = c[1], *m = c[2], *q = c[3];
    const P* fm = c[M == kMaskX ? 4 : 0];
    const P* fs = c[M == kMaskX ? 5 : 0];
    const P* fb = c[M == kMaskX ? 6 : 0];
    const T* g = dy + off;
    const T* xs = x + off;
    const T* ys = M == kMaskY ? y + off : nullptr;
    T* d = dx ? dx + off : nullptr;
    T* e = kRes ? dres + off : nullptr;
    if (d) {
      each(d, cw, [&](int64_t j) {
        const P xv = ld(xs, j);  // before the first store (see run)
        const P gi = gate(ld(g, j), xv, M == kMaskY ? ld(ys, j) : P(0), fm[j], fs[j], fb[j]);
        if (kRes) st(e, j, gi);
        st(d, j, kFrozen ? gi * k[j] : (gi * k[j] - r[j]) - (xv - m[j]) * q[j]);
      });
    } else {
      each(e, cw, [&](int64_t j) {
        st(e, j, gate(ld(g, j), ld(xs, j), M == kMaskY ? ld(ys, j) : P(0), fm[j], fs[j], fb[j]));
      });
    }
  }
  bool row4(int64_t, int64_t, int64_t, P* const*) const { return false; }
};

// Coefficients read from K precomputed arrays of `channels` values.
template <class T, int K>
struct StoredCoefs {
  const T* const* arrays;
  void operator()(int64_t c0, int64_t cw, T* const* dst) const {
    for (int i = 0; i < K; ++i) {
      const T* src = arrays[i] + c0;
      T* d = dst[i];
      BNORM_SIMD
      for (int64_t j = 0; j < cw; ++j) d[j] = src[j];
    }
  }
};

// Whether an output of `bytes` should bypass the caches: only when it is
// too large for the last-level cache to hand it on to the next operation.
inline bool stream_output(int64_t bytes) {
#ifdef BNORM_HAVE_STREAM
  return 2 * bytes >= l3_cache_bytes();
#else
  (void)bytes;
  return false;
#endif
}

// Rows [r0, r1) of channels [c0, c0 + cw), four at a time where possible.
template <class Op, class P>
inline void op_rows(const Op& op, int64_t r0, int64_t r1, int64_t C, int64_t c0,
                    int64_t cw, P* const* k) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4)
    if (!op.row4(r * C + c0, C, cw, k)) break;
  for (; r < r1; ++r) op.row(r * C + c0, cw, k);
}

// Thread tid's share of an elementwise pass over the whole tensor.
// fill(c0, cw, dst) writes the K coefficient arrays of channels [c0, c0+cw).
template <class T, class Op, class Fill>
void sweep(const Plan& p, const Op& op, const Fill& fill, int tid, int nt) {
  constexpr int K = Op::K;
  using P = Param<T>;
  constexpr int64_t B = kCoefBytes / (K * int64_t(sizeof(P)));
  P buf[K][B];
  P* k[K];
  for (int i = 0; i < K; ++i) k[i] = buf[i];
  const int64_t C = p.channels;
  if (p.rows) {
    // Tiles of rows, so that wide rows are still read front to back while
    // the coefficients of one block of channels are refilled per tile only.
    int64_t r0, r1;
    share(p.outer, tid, nt, &r0, &r1);
    const int64_t tile =
        C <= B ? r1 - r0
               : std::max<int64_t>(kSweepTileRows,
                                   kSweepTileBytes / (C * int64_t(sizeof(T))));
    for (int64_t t0 = r0; t0 < r1; t0 += tile) {
      const int64_t t1 = std::min(r1, t0 + tile);
      for (int64_t c0 = 0; c0 < C; c0 += B) {
        const int64_t cw = std::min(B, C - c0);
        fill(c0, cw, k);
        op_rows(op, t0, t1, C, c0, cw, k);
      }
    }
  } else if (p.inner >= kLongRun || p.outer < 2 * nt) {
    int64_t t0, t1;
    share(p.outer * C, tid, nt, &t0, &t1);
    for (int64_t t = t0; t < t1; ++t) {
      fill(t % C, 1, k);
      op.run(t * p.inner, p.inner, k, 0);
    }
  } else {
    int64_t o0, o1;
    share(p.outer, tid, nt, &o0, &o1);
    for (int64_t c0 = 0; c0 < C; c0 += B) {
      const int64_t cw = std::min(B, C - c0);
      fill(c0, cw, k);
      for (int64_t o = o0; o < o1; ++o)
        for (int64_t j = 0; j < cw; ++j)
          op.run((o * C + c0 + j) * p.inner, p.inner, k, j);
    }
  }
  stream_fence();
}

// The elementwise pass over channels [c0, c0 + cw) only (their data is still
// in cache); planar layout (Plan::whole_block), cw <= kChannelBlock.
template <class T, class Op, class Fill>
void sweep_channels(const Plan& p, const Op& op, const Fill& fill, int64_t c0,
                    int64_t cw) {
  constexpr int K = Op::K;
  using P = Param<T>;
  P buf[K][kChannelBlock];
  P* k[K];
  for (int i = 0; i < K; ++i) k[i] = buf[i];
  fill(c0, cw, k);
  const int64_t C = p.channels;
  for (int64_t o = 0; o < p.outer; ++o)
    for (int64_t j = 0; j < cw; ++j)
      op.run((o * C + c0 + j) * p.inner, p.inner, k, j);
  stream_fence();
}

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
