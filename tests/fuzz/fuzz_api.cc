// libFuzzer harness over the whole C API (built with ASan + UBSan; see
// tests/fuzz/run.sh). Each input picks an entry point, a dtype, sizes (small
// real ones, or arbitrary int64 values), which pointers are NULL or alias,
// eps, momentum, flags, thread settings, and the data itself (any bit
// pattern: NaN, Inf, denormals). Then:
//   - an error status must leave every buffer exactly as it was;
//   - success on sizes the harness could not have allocated is a bug;
//   - success on finite, moderate data must match a plain double-precision
//     computation here, within bounds scaled by the inputs' magnitudes.
// Any violation aborts, which libFuzzer reports with the input.
#include <bnorm/bnorm.h>
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kMaxElements = 1 << 14;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_api: %s\n", what);
  std::abort();
}

// n = outer * channels * inner if all >= 0 and n <= limit, else -1.
int64_t small_product(int64_t a, int64_t b, int64_t c, int64_t limit) {
  if (a < 0 || b < 0 || c < 0) return -1;
  if (a == 0 || b == 0 || c == 0) return 0;
  __int128 n = static_cast<__int128>(a) * b;  // < 2^126: no overflow
  if (n > limit) return -1;
  n *= c;
  return n <= limit ? static_cast<int64_t>(n) : -1;
}

// Would the library accept these sizes (no int64 overflow, bytes within the
// address space)?
bool sizes_valid(int64_t a, int64_t b, int64_t c, int64_t es) {
  if (a < 0 || b < 0 || c < 0) return false;
  if (a == 0 || b == 0 || c == 0) return true;
  __int128 n = static_cast<__int128>(a) * b;
  if (n > INT64_MAX) return false;
  n *= c;
  if (n > INT64_MAX / es) return false;
  return n * es <= INTPTR_MAX;
}

void serial_for(void*, int64_t n, bnorm_task_fn task, void* ctx) {
  for (int64_t i = n - 1; i >= 0; --i) task(ctx, i);
}

double pick_eps(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 7)) {
    case 0: return 0.0;
    case 1: return -1e-5;
    case 2: return NAN;
    case 3: return INFINITY;
    case 4: return in.ConsumeFloatingPoint<double>();
    case 5: return 1e-300;
    default: return 1e-5;
  }
}

double pick_momentum(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 7)) {
    case 0: return -0.1;
    case 1: return 1.5;
    case 2: return NAN;
    case 3: return in.ConsumeFloatingPoint<double>();
    case 4: return 0.0;
    case 5: return 1.0;
    default: return 0.1;
  }
}

struct Bounds {
  double x = 0;  // max |value|
  bool finite = true;
};

template <class T>
Bounds scan(const std::vector<T>& v) {
  Bounds b;
  for (T e : v) {
    const double d = static_cast<double>(e);
    if (!std::isfinite(d)) b.finite = false;
    else b.x = std::fmax(b.x, std::fabs(d));
  }
  return b;
}

template <class T>
void check_close(double got, double want, double scale, const char* what) {
  const double tol = (sizeof(T) == 4 ? 1e-4 : 1e-10) * (scale + 1e-30);
  if (!(std::fabs(got - want) <= tol)) {
    std::fprintf(stderr, "%s: got %.17g want %.17g (scale %.3g)\n", what, got, want, scale);
    fail("result differs from the double-precision computation");
  }
}

template <class T>
void run(FuzzedDataProvider& in, bnorm_dtype dtype) {
  // 0-4 the one-process ops, 5 status strings, 6-10 the split phases
  const int op = in.ConsumeIntegralInRange(0, 10);
  int64_t outer, channels, inner;
  if (in.ConsumeIntegralInRange(0, 4) == 0) {  // arbitrary sizes
    outer = in.ConsumeIntegral<int64_t>();
    channels = in.ConsumeIntegral<int64_t>();
    inner = in.ConsumeIntegral<int64_t>();
  } else {
    outer = in.ConsumeIntegralInRange<int64_t>(0, 40);
    channels = in.ConsumeIntegralInRange<int64_t>(0, 12);
    inner = in.ConsumeIntegralInRange<int64_t>(0, 70);
    if (in.ConsumeBool()) outer += in.ConsumeIntegralInRange<int64_t>(0, 400);
  }
  const int64_t es = sizeof(T);
  const int64_t n = small_product(outer, channels, inner, kMaxElements);
  const bool per_channel_only = op == 4 || op == 10;  // no data tensor
  // merge (op 10) takes `outer` parts of `channels` values and no inner
  const bool valid = op == 10 ? sizes_valid(outer, channels, 1, 8)
                              : sizes_valid(outer, channels, inner, es) &&
                                    (per_channel_only ? channels >= 0 : true) &&
                                    (op < 6 || channels <= INT64_MAX / 16);
  if (valid && n < 0 && !per_channel_only) return;  // real but too large: skip
  if (per_channel_only && valid && channels > kMaxElements) return;
  if (op == 10 && valid && outer > 64) return;  // more parts than the harness holds
  const int64_t nd = n < 0 ? 4 : n;                        // data elements
  const int64_t nc = channels >= 0 && channels <= kMaxElements ? channels : 4;

  // One arena: data buffers, then per-channel buffers, with slack so that
  // shifted (partially overlapping) pointers stay inside it.
  enum { X, Y, DY, DX, LW, W, B, RM, RV, SM, SI, DW, DB, LB, SLOTS };
  const int64_t slot_len[SLOTS] = {nd, nd, nd, nd, nd, nc, nc, nc, nc, nc, nc, nc, nc, nc};
  std::vector<int64_t> start(SLOTS + 1, 0);
  for (int s = 0; s < SLOTS; ++s) start[s + 1] = start[s] + slot_len[s] + 2;
  std::vector<T> arena(static_cast<size_t>(start[SLOTS]));
  const bool raw = in.ConsumeBool();
  for (auto& v : arena) {
    if (raw) {  // any bit pattern
      auto bytes = in.ConsumeBytes<uint8_t>(sizeof(T));
      bytes.resize(sizeof(T));
      std::memcpy(&v, bytes.data(), sizeof(T));
    } else {
      v = static_cast<T>(in.ConsumeIntegralInRange(-2000, 2000)) / T(16);
    }
  }
  void* p[SLOTS];
  for (int s = 0; s < SLOTS; ++s) p[s] = arena.data() + start[s] + 1;
  // variances must be >= 0 for a meaningful comparison; keep some negative
  if (!raw) for (int64_t c = 0; c < nc; ++c) {
    T* rv = static_cast<T*>(p[RV]);
    rv[c] = std::fabs(rv[c]);
    T* si = static_cast<T*>(p[SI]);
    si[c] = std::fabs(si[c]) + T(0.125);
  }
  // The split phases' float64 per-channel buffers (means, M2s, sums), and
  // merge's per-part counts and rows: parts = outer for op 10.
  enum { MEAN, M2, S1, S2, DSLOTS };
  const int64_t parts = op == 10 && outer >= 0 && outer <= 64 ? outer : 2;
  const int64_t dlen = (nc + 2) * (parts + 1);
  std::vector<double> darena(static_cast<size_t>(DSLOTS * dlen));
  for (auto& v : darena) v = static_cast<double>(in.ConsumeIntegralInRange(-2000, 2000)) / 16;
  double* d[DSLOTS];
  for (int s = 0; s < DSLOTS; ++s) d[s] = darena.data() + s * dlen + 1;
  for (int64_t k = 0; k < (parts + 1) * nc; ++k) d[M2][k] = std::fabs(d[M2][k]);
  std::vector<int64_t> counts(static_cast<size_t>(parts + 1));
  for (auto& c : counts)
    c = in.ConsumeIntegralInRange(0, 9) == 0 ? in.ConsumeIntegral<int64_t>()
                                             : in.ConsumeIntegralInRange<int64_t>(0, 50);
  int64_t merged_count = -7;
  const int64_t local = outer >= 0 && inner >= 0 && outer <= INT32_MAX && inner <= INT32_MAX
                            ? outer * inner : 0;
  const int64_t count = in.ConsumeIntegralInRange(0, 7) == 0
                            ? in.ConsumeIntegral<int64_t>()
                            : local + in.ConsumeIntegralInRange<int64_t>(0, 30);
  const uint32_t dnulls = in.ConsumeIntegralInRange(0, 7) == 0 ? in.ConsumeIntegral<uint32_t>() : 0;
  for (int s = 0; s < DSLOTS; ++s)
    if (dnulls >> s & 1) d[s] = nullptr;
  if (in.ConsumeIntegralInRange(0, 9) == 0 && d[MEAN] && d[M2]) d[M2] = d[MEAN] + 1;  // overlap

  // NULLs and aliases
  const uint32_t nulls = in.ConsumeIntegralInRange(0, 7) == 0 ? in.ConsumeIntegral<uint32_t>() : 0;
  for (int s = 0; s < SLOTS; ++s)
    if (nulls >> s & 1) p[s] = nullptr;
  const int alias = in.ConsumeIntegralInRange(0, 9);
  switch (alias) {
    case 0: p[Y] = p[X]; break;                       // in place
    case 1: p[DX] = p[DY]; break;
    case 2: p[DX] = p[X]; break;
    case 3: if (p[X]) p[Y] = static_cast<T*>(p[X]) + 1; break;  // partial overlap
    case 4: p[SM] = p[SI]; break;
    case 5: p[DW] = p[DB]; break;
    case 6: p[DX] = p[LW]; p[DB] = p[LB]; break;     // fold in place
    case 7: if (p[RM]) p[RV] = static_cast<T*>(p[RM]) + 1; break;
    default: break;
  }
  const double eps = pick_eps(in);
  const double momentum = pick_momentum(in);
  uint32_t flags = 0;
  switch (in.ConsumeIntegralInRange(0, 5)) {
    case 0: flags = in.ConsumeIntegral<uint32_t>(); break;
    case 1: flags = BNORM_FLAG_BIASED_RUNNING_VAR; break;
    case 2: flags = BNORM_FLAG_FROZEN_STATS; break;
    default: break;
  }
  if (in.ConsumeBool())
    bnorm_set_parallel_for(serial_for, nullptr, in.ConsumeIntegralInRange(1, 5));
  else
    bnorm_set_parallel_for(nullptr, nullptr, 0);

  const std::vector<T> before = arena;
  const std::vector<double> dbefore = darena;
  const std::vector<int64_t> cbefore = counts;
  bnorm_status st = -1;
  switch (op) {
    case 0:
      st = bnorm_forward_training(dtype, outer, channels, inner, p[X], p[Y], p[W], p[B],
                                  p[SM], p[SI], p[RM], p[RV], eps, momentum, flags);
      break;
    case 1:
      st = bnorm_forward_inference(dtype, outer, channels, inner, p[X], p[Y], p[RM], p[RV],
                                   p[W], p[B], eps);
      break;
    case 2:
      st = bnorm_backward(dtype, outer, channels, inner, p[DY], p[X], p[SM], p[SI], p[W],
                          p[DX], p[DW], p[DB], flags);
      break;
    case 3:
      st = bnorm_fold_into_layer(dtype, outer, channels, inner, p[LW], p[LB], p[RM], p[RV],
                                 p[W], p[B], eps, p[DX], p[DB]);
      break;
    case 4:
      st = bnorm_inference_scale_shift(dtype, channels, p[RM], p[RV], p[W], p[B], eps,
                                       p[DW], p[DB]);
      break;
    case 6:
      st = bnorm_moments(dtype, outer, channels, inner, p[X], d[MEAN], d[M2]);
      break;
    case 7:
      st = bnorm_forward_normalize(dtype, outer, channels, inner, p[X], p[Y], count, d[MEAN],
                                   d[M2], p[W], p[B], p[SM], p[SI], p[RM], p[RV], eps,
                                   momentum, flags);
      break;
    case 8:
      st = bnorm_backward_reduce(dtype, outer, channels, inner, p[DY], p[X], p[SM], d[S1],
                                 d[S2]);
      break;
    case 9:
      st = bnorm_backward_apply(dtype, outer, channels, inner, p[DY], p[X], p[SM], p[SI],
                                p[W], d[S1], d[S2], count, p[DX], p[DW], p[DB]);
      break;
    case 10:
      // rows: parts * channels values from d[MEAN] and d[M2]; outputs in S1, S2
      st = bnorm_merge_moments(outer, channels, nulls & 1 ? nullptr : counts.data(),
                               d[MEAN], d[M2], nulls & 2 ? nullptr : &merged_count, d[S1],
                               d[S2]);
      break;
    default:
      st = bnorm_status_string(in.ConsumeIntegral<int32_t>())[0] ? BNORM_OK : -1;
      return;
  }
  if (st < 0 || st > BNORM_ERROR_INTERNAL) fail("status outside the pinned codes");
  if (st == BNORM_ERROR_INTERNAL) fail("internal error");
  if (st != BNORM_OK) {
    if (std::memcmp(before.data(), arena.data(), arena.size() * sizeof(T)) != 0 ||
        std::memcmp(dbefore.data(), darena.data(), darena.size() * sizeof(double)) != 0 ||
        counts != cbefore || merged_count != -7)
      fail("a failed call wrote into a buffer");
    return;
  }
  if (!valid || (!per_channel_only && n < 0)) fail("success on sizes that are not valid");
  if ((op == 7 || op == 9) && (count <= 1 || count < local))
    fail("success with a count that cannot be the whole batch's");

  // Success: compare with double precision where the inputs are moderate
  // and the buffers are the plain ones (or y = x in place).
  const bool plain = nulls == 0 && (alias == 0 || alias >= 8);
  const Bounds bx = scan(before);
  if (!plain || !bx.finite || bx.x > 1e6 || !(eps >= 1e-6 && eps <= 1e6)) return;
  auto at = [&](int s, int64_t i) { return static_cast<double>(before[start[s] + 1 + i]); };
  auto now = [&](int s, int64_t i) { return static_cast<double>(arena[start[s] + 1 + i]); };
  auto gamma = [&](int64_t c) { return at(W, c); };
  auto beta = [&](int64_t c) { return at(B, c); };
  auto idx = [&](int64_t o, int64_t c, int64_t i) { return (o * channels + c) * inner + i; };
  const int out_slot = alias == 0 ? X : Y;
  if (op == 0) {
    const double m = static_cast<double>(outer * inner);
    for (int64_t c = 0; c < channels; ++c) {
      double s = 0, s2 = 0;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) s += at(X, idx(o, c, i));
      const double mean = s / m;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const double d = at(X, idx(o, c, i)) - mean;
          s2 += d * d;
        }
      const double inv = 1 / std::sqrt(s2 / m + eps);
      const double K = bx.x * inv;
      check_close<T>(now(SM, c), mean, bx.x, "save_mean");
      check_close<T>(now(SI, c), inv, inv * (1 + K * K), "save_invstd");
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          check_close<T>(now(out_slot, k), (at(X, k) - mean) * inv * gamma(c) + beta(c),
                         std::fabs(gamma(c)) * (K + 1) + std::fabs(beta(c)), "y");
        }
    }
  } else if (op == 1) {
    for (int64_t c = 0; c < channels; ++c) {
      const double inv = 1 / std::sqrt(at(RV, c) + eps);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          check_close<T>(now(out_slot, k), (at(X, k) - at(RM, c)) * inv * gamma(c) + beta(c),
                         2 * bx.x * inv * std::fabs(gamma(c)) + std::fabs(beta(c)), "y");
        }
    }
  } else if (op == 2) {
    for (int64_t c = 0; c < channels; ++c) {
      double g = 0, gx = 0, gabs = 0;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          g += at(DY, k);
          gx += at(DY, k) * (at(X, k) - at(SM, c));
          gabs += std::fabs(at(DY, k));
        }
      check_close<T>(now(DB, c), g, gabs, "dbias");
      check_close<T>(now(DW, c), gx * at(SI, c), gabs * 2 * bx.x * at(SI, c), "dweight");
    }
  } else if (op == 3) {
    for (int64_t c = 0; c < channels; ++c) {
      const double a = gamma(c) / std::sqrt(at(RV, c) + eps);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          check_close<T>(now(DX, k), at(LW, k) * a, std::fabs(at(LW, k) * a), "folded weight");
        }
      check_close<T>(now(DB, c), (at(LB, c) - at(RM, c)) * a + beta(c),
                     (bx.x * 2) * std::fabs(a) + std::fabs(beta(c)), "folded bias");
    }
  } else if (op == 6 && d[MEAN] && d[M2] && d[M2] != d[MEAN] + 1) {
    const double m = static_cast<double>(outer * inner);
    for (int64_t c = 0; c < channels; ++c) {
      double s = 0, s2 = 0;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) s += at(X, idx(o, c, i));
      const double mean = m > 0 ? s / m : 0;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const double dv = at(X, idx(o, c, i)) - mean;
          s2 += dv * dv;
        }
      check_close<double>(d[MEAN][c], mean, bx.x, "moments mean");
      check_close<double>(d[M2][c], s2, (m + 1) * bx.x * bx.x, "moments m2");
    }
  } else if (op == 7 && d[MEAN] && d[M2] && d[M2] != d[MEAN] + 1) {
    const double dm = static_cast<double>(count);
    for (int64_t c = 0; c < channels; ++c) {
      const double mean = d[MEAN][c];
      const double inv = 1 / std::sqrt(d[M2][c] / dm + eps);
      const double K = (bx.x + std::fabs(mean)) * inv;
      check_close<T>(now(SI, c), inv, inv, "normalize save_invstd");
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          check_close<T>(now(out_slot, k), (at(X, k) - mean) * inv * gamma(c) + beta(c),
                         std::fabs(gamma(c)) * (K + 1) + std::fabs(beta(c)), "normalize y");
        }
    }
  } else if (op == 8 && d[S1] && d[S2]) {
    for (int64_t c = 0; c < channels; ++c) {
      double g = 0, gx = 0, gabs = 0;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          g += at(DY, k);
          gx += at(DY, k) * (at(X, k) - at(SM, c));
          gabs += std::fabs(at(DY, k));
        }
      check_close<T>(d[S1][c], g, gabs, "sum_dy");
      check_close<T>(d[S2][c], gx, gabs * 2 * bx.x, "sum_dy_xmu");
    }
  } else if (op == 10 && d[MEAN] && d[M2] && d[M2] != d[MEAN] + 1) {
    int64_t total = 0;
    for (int64_t k = 0; k < outer; ++k) total += counts[k];
    if (merged_count != total) fail("merged count");
    for (int64_t c = 0; c < channels && total > 0; ++c) {
      double s = 0, scale = 0;
      for (int64_t k = 0; k < outer; ++k) {
        s += counts[k] * d[MEAN][k * channels + c];
        scale = std::fmax(scale, counts[k] ? std::fabs(d[MEAN][k * channels + c]) : 0);
      }
      const double mean = s / total;
      double q = 0, qs = 0;
      for (int64_t k = 0; k < outer; ++k) {
        if (!counts[k]) continue;
        const double dv = d[MEAN][k * channels + c] - mean;
        q += d[M2][k * channels + c] + counts[k] * dv * dv;
        qs += d[M2][k * channels + c] + counts[k] * scale * scale;
      }
      check_close<double>(d[S1][c], mean, scale, "merged mean");
      check_close<double>(d[S2][c], q, qs, "merged m2");
    }
  } else if (op == 4) {
    for (int64_t c = 0; c < channels; ++c) {
      const double a = gamma(c) / std::sqrt(at(RV, c) + eps);
      check_close<T>(now(DW, c), a, std::fabs(a), "scale");
      check_close<T>(now(DB, c), beta(c) - at(RM, c) * a, bx.x * std::fabs(a) + std::fabs(beta(c)), "shift");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const int which = in.ConsumeIntegralInRange(0, 9);
  if (which == 0) {
    // an unknown dtype: every entry point refuses it without touching memory
    const bnorm_dtype dt = in.ConsumeIntegral<int32_t>();
    if (dt == BNORM_FLOAT32 || dt == BNORM_FLOAT64 || dt == BNORM_FLOAT16 ||
        dt == BNORM_BFLOAT16)
      return 0;
    float buf[4] = {1, 2, 3, 4};
    if (bnorm_forward_inference(dt, 1, 1, 1, buf, buf, buf, buf, nullptr, nullptr, 1e-5) !=
        BNORM_ERROR_UNSUPPORTED_DTYPE)
      fail("unknown dtype accepted");
    return 0;
  }
  if (which <= 5)
    run<float>(in, BNORM_FLOAT32);
  else
    run<double>(in, BNORM_FLOAT64);
  return 0;
}
