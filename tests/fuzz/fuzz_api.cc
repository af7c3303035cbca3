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
  const int op = in.ConsumeIntegralInRange(0, 5);
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
  const bool valid = sizes_valid(outer, channels, inner, es) &&
                     (op == 4 ? channels >= 0 : true);
  if (valid && n < 0 && op != 4) return;  // real but too large to allocate: skip
  if (op == 4 && valid && channels > kMaxElements) return;
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
    default:
      st = bnorm_status_string(in.ConsumeIntegral<int32_t>())[0] ? BNORM_OK : -1;
      return;
  }
  if (st < 0 || st > BNORM_ERROR_INTERNAL) fail("status outside the pinned codes");
  if (st == BNORM_ERROR_INTERNAL) fail("internal error");
  if (st != BNORM_OK) {
    if (std::memcmp(before.data(), arena.data(), arena.size() * sizeof(T)) != 0)
      fail("a failed call wrote into a buffer");
    return;
  }
  if (!valid || (op != 4 && n < 0)) fail("success on sizes that are not valid");

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
    if (dt == BNORM_FLOAT32 || dt == BNORM_FLOAT64) return 0;
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
