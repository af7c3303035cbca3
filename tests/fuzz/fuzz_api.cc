// libFuzzer harness over the whole C API (built with ASan + UBSan; see
// tests/fuzz/run.sh). Each input picks one of the exported functions (the
// _ws forms through the ops that have them, with a workspace of the size
// bnorm_workspace_size reports or one byte less), a
// dtype (float32, float64, float16, bfloat16, or an unknown one), sizes
// (small real ones, or arbitrary int64 values), which pointers are NULL,
// which outputs alias which buffers (allowed in-place aliasings and
// forbidden partial or exact overlaps), eps, momentum, flags (each known
// flag and arbitrary bits), the thread settings and the host pool, and the
// data itself (any bit pattern: NaN, Inf, denormals). Then:
//   - an error status must leave every buffer exactly as it was;
//   - success on sizes the harness could not have allocated, or with an
//     overlap the header does not allow, is a bug;
//   - success with an allowed aliasing must give bitwise the results of the
//     same call with separate buffers (made here, from the same inputs);
//   - success on finite, moderate data must match a plain double-precision
//     computation here, within bounds scaled by the inputs' magnitudes.
// Any violation aborts, which libFuzzer reports with the input. With
// BNORM_FUZZ_STATS set, the number of calls per function (and how many
// succeeded) is printed at exit.
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
constexpr int64_t kMaxParts = 64;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_api: %s\n", what);
  std::abort();
}

// ---- calls per function (BNORM_FUZZ_STATS) ----------------------------------
enum Op {
  kTrain, kTrainFused, kInfer, kInferFused, kBackward, kBackwardFused, kFold, kScaleShift,
  kMoments, kMerge, kNormalize, kBackReduce, kBackApply, kPopulation, kMisc, kOps
};
const char* const kOpNames[kOps] = {
    "forward_training", "forward_training_fused", "forward_inference",
    "forward_inference_fused", "backward", "backward_fused", "fold_into_layer",
    "inference_scale_shift", "moments", "merge_moments", "forward_normalize",
    "backward_reduce", "backward_apply", "population_init/add/merge/result",
    "status/version/threads/isa"};
long g_calls[kOps], g_ok[kOps], g_aliased_ok[kOps], g_checked[kOps];
long g_ws_calls, g_ws_short;  // _ws calls with a caller's workspace; refused as too small

struct StatsAtExit {
  ~StatsAtExit() {
    if (!std::getenv("BNORM_FUZZ_STATS")) return;
    std::fprintf(stderr, "fuzz_api calls per function (succeeded, aliased and equal, "
                         "checked against double):\n");
    for (int i = 0; i < kOps; ++i)
      std::fprintf(stderr, "  %-34s %9ld  (%ld, %ld, %ld)\n", kOpNames[i], g_calls[i], g_ok[i],
                   g_aliased_ok[i], g_checked[i]);
    std::fprintf(stderr, "  with a caller's workspace: %ld calls, %ld refused as too small\n",
                 g_ws_calls, g_ws_short);
  }
} g_stats_at_exit;

// ---- dtypes -------------------------------------------------------------------
double half_to_double(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(m, -24)
             : e == 31 ? (m ? NAN : INFINITY)
                       : std::ldexp(m + 1024, e - 25);
  return h >> 15 ? -v : v;
}
double bf16_to_double(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct F32 {
  using S = float;
  using P = float;
  static constexpr bnorm_dtype id = BNORM_FLOAT32;
  static double get(S v) { return v; }
  static S moderate(int k) { return static_cast<float>(k) / 16; }
  static constexpr double tol = 1e-4;  // data results
  static constexpr double mtol = 1e-10;  // moments (double deviations)
  static constexpr double maxv = 3.4e38, tiny = 1e-45;
};
struct F64 {
  using S = double;
  using P = double;
  static constexpr bnorm_dtype id = BNORM_FLOAT64;
  static double get(S v) { return v; }
  static S moderate(int k) { return static_cast<double>(k) / 16; }
  static constexpr double tol = 1e-10;
  static constexpr double mtol = 1e-10;
  static constexpr double maxv = 1.7e308, tiny = 5e-324;
};
// |k| <= 2000: k/16 is exact in float16 (11-bit significand).
struct F16 {
  using S = uint16_t;
  using P = float;
  static constexpr bnorm_dtype id = BNORM_FLOAT16;
  static double get(S v) { return half_to_double(v); }
  static S moderate(int k) {
    if (k == 0) return 0;
    const uint16_t sign = k < 0 ? 0x8000 : 0;
    int a = k < 0 ? -k : k, e = 0;
    while (a >= 2048) a >>= 1, ++e;  // not reached for |k| <= 2000
    // a * 2^(e-4) with a < 2048: normalize to 1.m * 2^E
    int E = 10;
    while (a < 1024) a <<= 1, --E;
    return static_cast<uint16_t>(sign | ((E + e - 4 + 15) << 10) | (a & 1023));
  }
  static constexpr double tol = 2e-3;  // half an ulp is 2^-11 relative
  // Moments of half data form x - shift in float (float32 math): each
  // deviation rounds by up to 2^-24 of |x - shift| <= 2 max|x| when the two
  // exponents are far apart (a subnormal shift, a large value), so the mean
  // is off by up to 2^-23 max|x| and M2 by up to 16 * 2^-24 (m + 1) max|x|^2.
  static constexpr double mtol = 2e-6;
  static constexpr double maxv = 65504, tiny = 6e-8;  // largest, smallest subnormal
};
struct BF16 {
  using S = uint16_t;
  using P = float;
  static constexpr bnorm_dtype id = BNORM_BFLOAT16;
  static double get(S v) { return bf16_to_double(v); }
  static S moderate(int k) {  // k/16 truncated to bfloat16's 8-bit significand
    const float f = static_cast<float>(k) / 16;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return static_cast<uint16_t>(u >> 16);
  }
  static constexpr double tol = 1e-2;  // half an ulp is 2^-8 relative
  static constexpr double mtol = 2e-6;  // as F16's
  static constexpr double maxv = 3.38e38, tiny = 1e-40;
};

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
// address space, per-channel arrays of `b` doubles too)?
bool sizes_valid(int64_t a, int64_t b, int64_t c, int64_t es) {
  if (a < 0 || b < 0 || c < 0) return false;
  if (b > INTPTR_MAX / 8) return false;
  if (a == 0 || b == 0 || c == 0) return true;
  __int128 n = static_cast<__int128>(a) * b;
  if (n > INT64_MAX) return false;
  n *= c;
  if (n > INT64_MAX / es) return false;
  return n * es <= INTPTR_MAX;
}

// Host pools: in order, in reverse order (tasks must not depend on it).
void serial_for(void*, int64_t n, bnorm_task_fn task, void* ctx) {
  for (int64_t i = 0; i < n; ++i) task(ctx, i);
}
void reverse_for(void*, int64_t n, bnorm_task_fn task, void* ctx) {
  for (int64_t i = n - 1; i >= 0; --i) task(ctx, i);
}

// eps, momentum and flags: the first value (what an exhausted input gives)
// is the common valid one.
double pick_eps(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 12)) {
    case 7: return 0.0;
    case 8: return -1e-5;
    case 9: return NAN;
    case 10: return INFINITY;
    case 11: return in.ConsumeFloatingPoint<double>();
    case 12: return 1e-300;
    case 6: return 1e-8;
    default: return 1e-5;
  }
}

double pick_momentum(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 10)) {
    case 6: return -0.1;
    case 7: return 1.5;
    case 8: return NAN;
    case 9: return in.ConsumeFloatingPoint<double>();
    case 10: return 0.0;
    case 5: return 1.0;
    default: return 0.1;
  }
}

// The flags each function knows.
uint32_t known_flags(int op);

uint32_t pick_flags(FuzzedDataProvider& in, int op) {
  switch (in.ConsumeIntegralInRange(0, 9)) {
    case 7: return in.ConsumeIntegralInRange<uint32_t>(0, 15);  // known to some function
    case 8: return 1u << in.ConsumeIntegralInRange(3, 31);      // one unknown bit
    case 9: return in.ConsumeIntegral<uint32_t>();
    default: return in.ConsumeIntegralInRange<uint32_t>(0, 15) & known_flags(op);
  }
}

void check_close(double got, double want, double scale, double tol, const char* what) {
  const double bound = tol * (scale + 1e-30);
  if (!(std::fabs(got - want) <= bound)) {
    std::fprintf(stderr, "%s: got %.17g want %.17g (scale %.3g)\n", what, got, want, scale);
    fail("result differs from the double-precision computation");
  }
}

uint32_t known_flags(int op) {
  switch (op) {
    case kTrain: case kNormalize: return BNORM_FLAG_BIASED_RUNNING_VAR;
    case kTrainFused: return BNORM_FLAG_BIASED_RUNNING_VAR | BNORM_FLAG_RELU | BNORM_FLAG_RELU6;
    case kInferFused: return BNORM_FLAG_RELU | BNORM_FLAG_RELU6;
    case kBackward: return BNORM_FLAG_FROZEN_STATS;
    case kBackwardFused: return BNORM_FLAG_FROZEN_STATS | BNORM_FLAG_RELU | BNORM_FLAG_RELU6;
    default: return 0;
  }
}

// ---- the buffers -------------------------------------------------------------
// Data slots (dtype's storage), per-channel slots (parameter type), double
// slots (split-phase statistics; parts rows each), two population states.
enum DataSlot { X, Y, DY, DX, R, YF, DR, LW, NDATA };
enum ParSlot { W, B, RM, RV, SM, SI, DW, DB, LB, NPAR };
enum DblSlot { MEAN, M2, S1, S2, NDBL };
const char* const kDataNames[NDATA] = {"x", "y", "dy", "dx", "residual", "y(fwd)", "dresidual", "layer_weight"};
const char* const kParNames[NPAR] = {"weight", "bias", "running_mean", "running_var", "save_mean", "save_invstd", "dweight", "dbias", "layer_bias"};

template <class D>
struct Buffers {
  using S = typename D::S;
  using P = typename D::P;
  int64_t nd, nc, parts;
  // one arena per kind, every slot with one element of slack on each side
  std::vector<S> data;
  std::vector<P> par;
  std::vector<double> dbl;
  std::vector<int64_t> counts;
  std::vector<double> state;  // two population accumulators
  int64_t count_out = -7, batches_out = -7, values_out = -7;

  int64_t dstride() const { return nd + 2; }
  int64_t pstride() const { return nc + 2; }
  int64_t qstride() const { return nc * (parts + 1) + 2; }
  int64_t sstride() const { return BNORM_POPULATION_STATE_SIZE(nc) + 2; }
  S* d(int s) { return data.data() + s * dstride() + 1; }
  P* p(int s) { return par.data() + s * pstride() + 1; }
  double* q(int s) { return dbl.data() + s * qstride() + 1; }
  double* st(int s) { return state.data() + s * sstride() + 1; }

  void allocate(int64_t nd_, int64_t nc_, int64_t parts_) {
    nd = nd_, nc = nc_, parts = parts_;
    data.assign(static_cast<size_t>(NDATA * dstride()), S());
    par.assign(static_cast<size_t>(NPAR * pstride()), P());
    dbl.assign(static_cast<size_t>(NDBL * qstride()), 0.0);
    counts.assign(static_cast<size_t>(parts + 1), 0);
    state.assign(static_cast<size_t>(2 * sstride()), 0.0);
  }
  bool same(const Buffers& o) const {
    return std::memcmp(data.data(), o.data.data(), data.size() * sizeof(S)) == 0 &&
           std::memcmp(par.data(), o.par.data(), par.size() * sizeof(P)) == 0 &&
           std::memcmp(dbl.data(), o.dbl.data(), dbl.size() * sizeof(double)) == 0 &&
           counts == o.counts &&
           std::memcmp(state.data(), o.state.data(), state.size() * sizeof(double)) == 0 &&
           count_out == o.count_out && batches_out == o.batches_out &&
           values_out == o.values_out;
  }
};

// Where each pointer argument points: its own slot (-1), another slot of the
// same kind (exactly: in place), or one element past it (a partial overlap),
// or NULL.
struct Pointing {
  int data_alias[NDATA];
  int par_alias[NPAR];
  bool data_partial[NDATA] = {};
  bool par_partial[NPAR] = {};
  uint32_t data_null = 0, par_null = 0, dbl_null = 0;
  bool dbl_overlap = false;  // m2 one past mean
  bool state_same = false;   // population_merge(state, state)
  Pointing() {
    for (int& a : data_alias) a = -1;
    for (int& a : par_alias) a = -1;
  }
  bool any_alias() const {
    for (int a : data_alias) if (a >= 0) return true;
    for (int a : par_alias) if (a >= 0) return true;
    return false;
  }
  bool any_partial() const {
    for (bool b : data_partial) if (b) return true;
    for (bool b : par_partial) if (b) return true;
    return dbl_overlap || state_same;
  }
};

template <class D>
struct Ptrs {
  void* d[NDATA];
  void* p[NPAR];
  double* q[NDBL];
  int64_t* counts;
  double* st[2];
  int64_t *count_out, *batches_out, *values_out;
};

template <class D>
Ptrs<D> point(Buffers<D>& b, const Pointing& how) {
  Ptrs<D> r;
  for (int s = 0; s < NDATA; ++s) {
    const int t = how.data_alias[s] >= 0 ? how.data_alias[s] : s;
    r.d[s] = how.data_null >> s & 1 ? nullptr : b.d(t) + (how.data_partial[s] ? 1 : 0);
  }
  for (int s = 0; s < NPAR; ++s) {
    const int t = how.par_alias[s] >= 0 ? how.par_alias[s] : s;
    r.p[s] = how.par_null >> s & 1 ? nullptr : b.p(t) + (how.par_partial[s] ? 1 : 0);
  }
  for (int s = 0; s < NDBL; ++s) r.q[s] = how.dbl_null >> s & 1 ? nullptr : b.q(s);
  if (how.dbl_overlap && r.q[MEAN]) r.q[M2] = r.q[MEAN] + 1;
  r.counts = how.dbl_null >> 4 & 1 ? nullptr : b.counts.data();
  r.st[0] = how.dbl_null >> 5 & 1 ? nullptr : b.st(0);
  r.st[1] = how.state_same ? r.st[0] : b.st(1);
  r.count_out = how.dbl_null >> 6 & 1 ? nullptr : &b.count_out;
  r.batches_out = how.dbl_null >> 7 & 1 ? nullptr : &b.batches_out;
  r.values_out = &b.values_out;
  return r;
}

// Argument ids: data slots, then parameter slots, then the rest.
enum { kParBase = NDATA, kDblBase = NDATA + NPAR, kCounts = kDblBase + NDBL, kState0,
       kState1, kCountOut, kBatchesOut, kValuesOut };
const char* slot_name(int id) {
  static const char* const rest[] = {"mean(f64)", "m2(f64)", "s1(f64)", "s2(f64)", "counts",
                                     "state", "other", "count", "batches", "values"};
  if (id < NDATA) return kDataNames[id];
  if (id < kDblBase) return kParNames[id - kParBase];
  return rest[id - kDblBase];
}

// One pointer argument of a call: where, how many bytes, read and/or written.
struct Arg {
  const void* p;
  int64_t bytes;
  bool in, out;
  int id;
};
bool overlaps(const Arg& a, const Arg& b) {
  if (!a.p || !b.p || a.bytes <= 0 || b.bytes <= 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.p), b0 = reinterpret_cast<uintptr_t>(b.p);
  return a0 < b0 + static_cast<uintptr_t>(b.bytes) && b0 < a0 + static_cast<uintptr_t>(a.bytes);
}

// Which aliasings the header allows: output id -> the inputs it may be.
bool alias_allowed(int op, int out, int in) {
  switch (op) {
    case kTrain: case kInfer: case kNormalize: return out == Y && in == X;
    case kTrainFused: case kInferFused: return out == Y && (in == X || in == R);
    case kBackward: case kBackApply: return out == DX && (in == DY || in == X);
    case kBackwardFused: return (out == DX || out == DR) && (in == DY || in == X || in == YF);
    case kFold: return (out == DX && in == LW) || (out == kParBase + DB && in == kParBase + LB);
    case kScaleShift:
      return (out == kParBase + DW || out == kParBase + DB) &&
             (in == kParBase + RM || in == kParBase + RV || in == kParBase + W ||
              in == kParBase + B);
    default: return false;
  }
}

// The pointer arguments of op (as call() passes them).
template <class D>
std::vector<Arg> args_of(int op, const Ptrs<D>& a, int64_t nd, int64_t nc, int64_t parts,
                         int pop_kind) {
  const int64_t db = nd * int64_t(sizeof(typename D::S));
  const int64_t pb = nc * int64_t(sizeof(typename D::P)), qb = nc * 8;
  auto d = [&](int s, bool in, bool out) { return Arg{a.d[s], db, in, out, s}; };
  auto p = [&](int s, bool in, bool out) { return Arg{a.p[s], pb, in, out, kParBase + s}; };
  auto q = [&](int s, bool in, bool out, int64_t rows = 1) {
    return Arg{a.q[s], qb * rows, in, out, kDblBase + s};
  };
  switch (op) {
    case kTrain:
      return {d(X, 1, 0), d(Y, 0, 1), p(W, 1, 0), p(B, 1, 0), p(SM, 0, 1), p(SI, 0, 1),
              p(RM, 1, 1), p(RV, 1, 1)};
    case kTrainFused:
      return {d(X, 1, 0), d(R, 1, 0), d(Y, 0, 1), p(W, 1, 0), p(B, 1, 0), p(SM, 0, 1),
              p(SI, 0, 1), p(RM, 1, 1), p(RV, 1, 1)};
    case kInfer:
      return {d(X, 1, 0), d(Y, 0, 1), p(RM, 1, 0), p(RV, 1, 0), p(W, 1, 0), p(B, 1, 0)};
    case kInferFused:
      return {d(X, 1, 0), d(R, 1, 0), d(Y, 0, 1), p(RM, 1, 0), p(RV, 1, 0), p(W, 1, 0),
              p(B, 1, 0)};
    case kBackward:
      return {d(DY, 1, 0), d(X, 1, 0), p(SM, 1, 0), p(SI, 1, 0), p(W, 1, 0), d(DX, 0, 1),
              p(DW, 0, 1), p(DB, 0, 1)};
    case kBackwardFused:
      return {d(DY, 1, 0), d(X, 1, 0), d(YF, 1, 0), p(SM, 1, 0), p(SI, 1, 0), p(W, 1, 0),
              p(B, 1, 0), d(DX, 0, 1), p(DW, 0, 1), p(DB, 0, 1), d(DR, 0, 1)};
    case kFold:
      return {d(LW, 1, 0), p(LB, 1, 0), p(RM, 1, 0), p(RV, 1, 0), p(W, 1, 0), p(B, 1, 0),
              d(DX, 0, 1), p(DB, 0, 1)};
    case kScaleShift:
      return {p(RM, 1, 0), p(RV, 1, 0), p(W, 1, 0), p(B, 1, 0), p(DW, 0, 1), p(DB, 0, 1)};
    case kMoments: return {d(X, 1, 0), q(MEAN, 0, 1), q(M2, 0, 1)};
    case kMerge:
      return {Arg{a.counts, parts * 8, 1, 0, kCounts}, q(MEAN, 1, 0, parts), q(M2, 1, 0, parts),
              Arg{a.count_out, 8, 0, 1, kCountOut}, q(S1, 0, 1), q(S2, 0, 1)};
    case kNormalize:
      return {d(X, 1, 0), d(Y, 0, 1), q(MEAN, 1, 0), q(M2, 1, 0), p(W, 1, 0), p(B, 1, 0),
              p(SM, 0, 1), p(SI, 0, 1), p(RM, 1, 1), p(RV, 1, 1)};
    case kBackReduce:
      return {d(DY, 1, 0), d(X, 1, 0), p(SM, 1, 0), q(S1, 0, 1), q(S2, 0, 1)};
    case kBackApply:
      return {d(DY, 1, 0), d(X, 1, 0), p(SM, 1, 0), p(SI, 1, 0), p(W, 1, 0), q(S1, 1, 0),
              q(S2, 1, 0), d(DX, 0, 1), p(DW, 0, 1), p(DB, 0, 1)};
    default: {
      const int64_t sb = BNORM_POPULATION_STATE_SIZE(nc) * 8;
      switch (pop_kind) {
        case 0: return {Arg{a.st[0], sb, 0, 1, kState0}};
        case 1: return {Arg{a.st[0], sb, 1, 1, kState0}, q(MEAN, 1, 0), q(M2, 1, 0)};
        case 2: return {Arg{a.st[0], sb, 1, 1, kState0}, Arg{a.st[1], sb, 1, 0, kState1}};
        default:
          return {Arg{a.st[0], sb, 1, 0, kState0}, Arg{a.batches_out, 8, 0, 1, kBatchesOut},
                  Arg{a.values_out, 8, 0, 1, kValuesOut}, q(S1, 0, 1), q(S2, 0, 1)};
      }
    }
  }
}

// The address in `to` at the place `p` has in `from` (same layout), or null.
template <class D>
const void* relocate(const Buffers<D>& from, const Buffers<D>& to, const void* p) {
  auto in = [&](const auto& v, const auto& w) -> const void* {
    const auto* b = reinterpret_cast<const unsigned char*>(v.data());
    const auto* e = b + v.size() * sizeof(v[0]);
    const auto* q = static_cast<const unsigned char*>(p);
    if (q < b || q >= e) return nullptr;
    return reinterpret_cast<const unsigned char*>(w.data()) + (q - b);
  };
  if (const void* r = in(from.data, to.data)) return r;
  if (const void* r = in(from.par, to.par)) return r;
  if (const void* r = in(from.dbl, to.dbl)) return r;
  if (const void* r = in(from.counts, to.counts)) return r;
  if (const void* r = in(from.state, to.state)) return r;
  if (p == &from.count_out) return &to.count_out;
  if (p == &from.batches_out) return &to.batches_out;
  if (p == &from.values_out) return &to.values_out;
  return nullptr;
}

// ---- the caller-owned workspace --------------------------------------------------
// How the ops that have a _ws form are called: 0 the plain entry point, 1
// the _ws form with workspace NULL (bnorm allocates), 2 with a block of the
// size bnorm_workspace_size reports (filled with garbage), 3 with one byte
// less. Modes 1 and 2 must behave exactly as 0 (the oracle below checks
// their results); 3 must refuse with WORKSPACE_TOO_SMALL where 0 succeeds
// and a workspace is needed, and fail as 0 does otherwise.
int g_ws_mode = 0;
size_t g_ws_need = 0;  // what bnorm_workspace_size said, for the last _ws call

int ws_op(int op) {
  switch (op) {
    case kTrainFused: return BNORM_OP_FORWARD_TRAINING;
    case kBackwardFused: return BNORM_OP_BACKWARD;
    case kMoments: return BNORM_OP_MOMENTS;
    case kNormalize: return BNORM_OP_FORWARD_NORMALIZE;
    case kBackReduce: return BNORM_OP_BACKWARD_REDUCE;
    case kBackApply: return BNORM_OP_BACKWARD_APPLY;
    default: return 0;
  }
}

// The workspace of this call for g_ws_mode (ws null: none or NULL).
struct Workspace {
  std::vector<unsigned char> block;
  void* ws = nullptr;
  size_t bytes = 0;
  Workspace(int op, bnorm_dtype dt, int64_t outer, int64_t channels, int64_t inner) {
    if (g_ws_mode < 2 || !ws_op(op)) return;
    size_t need = 0;
    if (bnorm_workspace_size(ws_op(op), dt, outer, channels, inner, 0, &need) != BNORM_OK)
      need = 64;  // sizes the call itself must refuse
    g_ws_need = need;
    bytes = g_ws_mode == 3 && need > 0 ? need - 1 : need;
    block.assign(bytes + 1, 0xa5);
    ws = block.data();
    ++g_ws_calls;
  }
};

// ---- one input ------------------------------------------------------------------
template <class D>
bnorm_status call(int op, const Ptrs<D>& a, int64_t outer, int64_t channels,
                  int64_t inner, double eps, double momentum, uint32_t flags, int64_t count,
                  int pop_kind, int64_t pop_count) {
  const bnorm_dtype dt = D::id;
  const Workspace w(op, dt, outer, channels, inner);
  switch (op) {
    case kTrain:
      return bnorm_forward_training(dt, outer, channels, inner, a.d[X], a.d[Y], a.p[W], a.p[B],
                                    a.p[SM], a.p[SI], a.p[RM], a.p[RV], eps, momentum, flags);
    case kTrainFused:
      if (g_ws_mode)
        return bnorm_forward_training_ws(dt, outer, channels, inner, a.d[X], a.d[R], a.d[Y],
                                         a.p[W], a.p[B], a.p[SM], a.p[SI], a.p[RM], a.p[RV],
                                         eps, momentum, flags, w.ws, w.bytes);
      return bnorm_forward_training_fused(dt, outer, channels, inner, a.d[X], a.d[R], a.d[Y],
                                          a.p[W], a.p[B], a.p[SM], a.p[SI], a.p[RM], a.p[RV],
                                          eps, momentum, flags);
    case kInfer:
      return bnorm_forward_inference(dt, outer, channels, inner, a.d[X], a.d[Y], a.p[RM],
                                     a.p[RV], a.p[W], a.p[B], eps);
    case kInferFused:
      return bnorm_forward_inference_fused(dt, outer, channels, inner, a.d[X], a.d[R], a.d[Y],
                                           a.p[RM], a.p[RV], a.p[W], a.p[B], eps, flags);
    case kBackward:
      return bnorm_backward(dt, outer, channels, inner, a.d[DY], a.d[X], a.p[SM], a.p[SI],
                            a.p[W], a.d[DX], a.p[DW], a.p[DB], flags);
    case kBackwardFused:
      if (g_ws_mode)
        return bnorm_backward_ws(dt, outer, channels, inner, a.d[DY], a.d[X], a.d[YF],
                                 a.p[SM], a.p[SI], a.p[W], a.p[B], a.d[DX], a.p[DW], a.p[DB],
                                 a.d[DR], flags, w.ws, w.bytes);
      return bnorm_backward_fused(dt, outer, channels, inner, a.d[DY], a.d[X], a.d[YF],
                                  a.p[SM], a.p[SI], a.p[W], a.p[B], a.d[DX], a.p[DW],
                                  a.p[DB], a.d[DR], flags);
    case kFold:
      return bnorm_fold_into_layer(dt, outer, channels, inner, a.d[LW], a.p[LB], a.p[RM],
                                   a.p[RV], a.p[W], a.p[B], eps, a.d[DX], a.p[DB]);
    case kScaleShift:
      return bnorm_inference_scale_shift(dt, channels, a.p[RM], a.p[RV], a.p[W], a.p[B], eps,
                                         a.p[DW], a.p[DB]);
    case kMoments:
      if (g_ws_mode)
        return bnorm_moments_ws(dt, outer, channels, inner, a.d[X], a.q[MEAN], a.q[M2], w.ws,
                                w.bytes);
      return bnorm_moments(dt, outer, channels, inner, a.d[X], a.q[MEAN], a.q[M2]);
    case kMerge:
      // `outer` parts: the harness's own count when the sizes are valid,
      // else whatever the input said, which must be refused
      return bnorm_merge_moments(outer, channels, a.counts, a.q[MEAN], a.q[M2], a.count_out,
                                 a.q[S1], a.q[S2]);
    case kNormalize:
      if (g_ws_mode)
        return bnorm_forward_normalize_ws(dt, outer, channels, inner, a.d[X], a.d[Y], count,
                                          a.q[MEAN], a.q[M2], a.p[W], a.p[B], a.p[SM], a.p[SI],
                                          a.p[RM], a.p[RV], eps, momentum, flags, w.ws,
                                          w.bytes);
      return bnorm_forward_normalize(dt, outer, channels, inner, a.d[X], a.d[Y], count,
                                     a.q[MEAN], a.q[M2], a.p[W], a.p[B], a.p[SM], a.p[SI],
                                     a.p[RM], a.p[RV], eps, momentum, flags);
    case kBackReduce:
      if (g_ws_mode)
        return bnorm_backward_reduce_ws(dt, outer, channels, inner, a.d[DY], a.d[X], a.p[SM],
                                        a.q[S1], a.q[S2], w.ws, w.bytes);
      return bnorm_backward_reduce(dt, outer, channels, inner, a.d[DY], a.d[X], a.p[SM],
                                   a.q[S1], a.q[S2]);
    case kBackApply:
      if (g_ws_mode)
        return bnorm_backward_apply_ws(dt, outer, channels, inner, a.d[DY], a.d[X], a.p[SM],
                                       a.p[SI], a.p[W], a.q[S1], a.q[S2], count, a.d[DX],
                                       a.p[DW], a.p[DB], w.ws, w.bytes);
      return bnorm_backward_apply(dt, outer, channels, inner, a.d[DY], a.d[X], a.p[SM],
                                  a.p[SI], a.p[W], a.q[S1], a.q[S2], count, a.d[DX], a.p[DW],
                                  a.p[DB]);
    default:  // kPopulation
      switch (pop_kind) {
        case 0: return bnorm_population_init(channels, a.st[0]);
        case 1: return bnorm_population_add(channels, a.st[0], pop_count, a.q[MEAN], a.q[M2]);
        case 2: return bnorm_population_merge(channels, a.st[0], a.st[1]);
        default:
          return bnorm_population_result(channels, a.st[0], a.batches_out, a.values_out,
                                         a.q[S1], a.q[S2]);
      }
  }
}

struct Scan {
  double x = 0;  // max |value| of the data inputs and parameters
  bool finite = true;
  void add(double d) {
    if (!std::isfinite(d)) finite = false;
    else x = std::fmax(x, std::fabs(d));
  }
};

template <class D>
void run(FuzzedDataProvider& in) {
  using S = typename D::S;
  using P = typename D::P;
  const int op = in.ConsumeIntegralInRange(0, int(kPopulation));
  int64_t outer, channels, inner;
  if (in.ConsumeIntegralInRange(0, 4) == 4) {  // arbitrary sizes
    outer = in.ConsumeIntegral<int64_t>();
    channels = in.ConsumeIntegral<int64_t>();
    inner = in.ConsumeIntegral<int64_t>();
    // one of them small (0 or 1 with huge others: empty tensors whose
    // products of the other two overflow)
    switch (in.ConsumeIntegralInRange(0, 3)) {
      case 1: outer = in.ConsumeIntegralInRange<int64_t>(-1, 1); break;
      case 2: channels = in.ConsumeIntegralInRange<int64_t>(-1, 1); break;
      case 3: inner = in.ConsumeIntegralInRange<int64_t>(-1, 1); break;
      default: break;
    }
  } else {
    outer = in.ConsumeIntegralInRange<int64_t>(0, 40);
    channels = in.ConsumeIntegralInRange<int64_t>(0, 12);
    inner = in.ConsumeIntegralInRange<int64_t>(0, 70);
    if (in.ConsumeBool()) outer += in.ConsumeIntegralInRange<int64_t>(0, 400);
    if (in.ConsumeIntegralInRange(0, 7) == 0) channels += in.ConsumeIntegralInRange<int64_t>(250, 300);
  }
  const int64_t es = sizeof(S);
  const bool helper = op == kFold || op == kScaleShift;
  const int64_t hes = helper ? sizeof(P) : es;  // the helpers take the parameter type
  const int64_t n = small_product(outer, channels, inner, kMaxElements);
  const bool per_channel_only = op == kScaleShift || op == kMerge || op == kPopulation;
  // merge takes `outer` parts of `channels` values and no inner
  bool valid;
  if (op == kMerge) valid = sizes_valid(outer, channels, 1, 8);
  else if (per_channel_only) valid = channels >= 0 && channels <= INTPTR_MAX / 8;
  else valid = sizes_valid(outer, channels, inner, hes);
  if (op == kPopulation) valid = channels >= 0 && channels <= (INT64_MAX / 8 - 4) / 5;
  if (valid && n < 0 && !per_channel_only) return;  // real but too large: skip
  if (per_channel_only && valid && channels > kMaxElements) return;
  if (op == kMerge && valid && outer > kMaxParts) return;  // more parts than the harness holds
  const int64_t nd = n < 0 ? 4 : n;  // data elements
  const int64_t nc = channels >= 0 && channels <= kMaxElements ? channels : 4;
  const int64_t parts = op == kMerge && outer >= 0 && outer <= kMaxParts ? outer : 2;

  // The choices first, the bulk data last: an input that runs out leaves
  // zeros, which select the common, valid choice of each.
  const bool raw = in.ConsumeBool();
  const int pop_kind = in.ConsumeIntegralInRange(0, 3);  // init, add, merge, result
  const int64_t pop_count = in.ConsumeIntegralInRange(0, 9) == 9 ? in.ConsumeIntegral<int64_t>()
                                                                 : in.ConsumeIntegralInRange<int64_t>(0, 40);
  const int64_t local = outer >= 0 && inner >= 0 && outer <= INT32_MAX && inner <= INT32_MAX
                            ? outer * inner : 0;
  const int64_t count = in.ConsumeIntegralInRange(0, 7) == 7
                            ? in.ConsumeIntegral<int64_t>()
                            : local + in.ConsumeIntegralInRange<int64_t>(0, 30);

  // NULLs, aliases and overlaps
  Pointing how;
  if (in.ConsumeIntegralInRange(0, 7) == 7) how.data_null = in.ConsumeIntegral<uint32_t>();
  if (in.ConsumeIntegralInRange(0, 7) == 7) how.par_null = in.ConsumeIntegral<uint32_t>();
  if (in.ConsumeIntegralInRange(0, 7) == 7) how.dbl_null = in.ConsumeIntegral<uint32_t>();
  // optional buffers are often absent
  if (in.ConsumeBool()) how.data_null |= 1u << R;
  if (in.ConsumeBool()) how.data_null |= 1u << YF;
  if (in.ConsumeBool()) how.data_null |= 1u << DR;
  const int n_alias = in.ConsumeIntegralInRange(0, 3);
  for (int k = 0; k < n_alias; ++k) {
    const int kind = in.ConsumeIntegralInRange(0, 3);
    if (kind <= 1) {  // data: exact or partial
      const int o = in.ConsumeIntegralInRange(0, NDATA - 1), t = in.ConsumeIntegralInRange(0, NDATA - 1);
      if (o == t) continue;
      how.data_alias[o] = t;
      how.data_partial[o] = kind == 1;
    } else if (kind == 2) {
      const int o = in.ConsumeIntegralInRange(0, NPAR - 1), t = in.ConsumeIntegralInRange(0, NPAR - 1);
      if (o == t) continue;
      how.par_alias[o] = t;
      how.par_partial[o] = in.ConsumeBool();
    } else {
      if (in.ConsumeBool()) how.dbl_overlap = true;
      else how.state_same = true;
    }
  }
  const double eps = pick_eps(in);
  const double momentum = pick_momentum(in);
  const uint32_t flags = pick_flags(in, op);
  g_ws_mode = ws_op(op) ? in.ConsumeIntegralInRange(0, 3) : 0;
  switch (in.ConsumeIntegralInRange(0, 3)) {
    case 1: bnorm_set_parallel_for(serial_for, nullptr, in.ConsumeIntegralInRange(1, 5)); break;
    case 2: bnorm_set_parallel_for(reverse_for, nullptr, in.ConsumeIntegralInRange(1, 8)); break;
    default: bnorm_set_parallel_for(nullptr, nullptr, 0);
  }
  bnorm_set_num_threads(in.ConsumeIntegralInRange(-1, 4));

  Buffers<D> buf;
  buf.allocate(nd, nc, parts);
  Scan scan;
  for (auto& v : buf.data) {
    if (raw) {  // any bit pattern
      auto bytes = in.ConsumeBytes<uint8_t>(sizeof(S));
      bytes.resize(sizeof(S));
      std::memcpy(&v, bytes.data(), sizeof(S));
    } else {
      v = D::moderate(in.ConsumeIntegralInRange(-2000, 2000));
    }
  }
  for (auto& v : buf.par) {
    if (raw) {
      auto bytes = in.ConsumeBytes<uint8_t>(sizeof(P));
      bytes.resize(sizeof(P));
      std::memcpy(&v, bytes.data(), sizeof(P));
    } else {
      v = static_cast<P>(in.ConsumeIntegralInRange(-2000, 2000)) / P(16);
    }
  }
  // variances >= 0 and inverse standard deviations > 0 for a meaningful
  // comparison (raw data keeps any sign)
  if (!raw)
    for (int64_t c = 0; c < nc; ++c) {
      buf.p(RV)[c] = std::fabs(buf.p(RV)[c]);
      buf.p(SI)[c] = std::fabs(buf.p(SI)[c]) + P(0.125);
    }
  for (auto& v : buf.dbl) v = static_cast<double>(in.ConsumeIntegralInRange(-2000, 2000)) / 16;
  for (int64_t k = 0; k < nc * (parts + 1); ++k) buf.q(M2)[k] = std::fabs(buf.q(M2)[k]);
  for (auto& c : buf.counts)
    c = in.ConsumeIntegralInRange(0, 9) == 9 ? in.ConsumeIntegral<int64_t>()
                                             : in.ConsumeIntegralInRange<int64_t>(0, 50);
  // population states: initialized (with a few batches), or garbage
  if (op == kPopulation && nc == channels) {
    for (int s = 0; s < 2; ++s) {
      if (in.ConsumeIntegralInRange(0, 7) == 7) {
        for (int64_t k = 0; k < BNORM_POPULATION_STATE_SIZE(nc); ++k)
          buf.st(s)[k] = in.ConsumeFloatingPoint<double>();
        continue;
      }
      if (bnorm_population_init(nc, buf.st(s)) != BNORM_OK) fail("population_init");
      const int batches = in.ConsumeIntegralInRange(0, 3);
      for (int k = 0; k < batches; ++k)
        if (bnorm_population_add(nc, buf.st(s), 2 + k * 7, buf.q(MEAN) + k, buf.q(M2) + k) !=
            BNORM_OK)
          fail("population_add while preparing");
    }
  }
  const Buffers<D> before = buf;
  const Ptrs<D> ptr = point(buf, how);
  ++g_calls[op];
  const bnorm_status st = call<D>(op, ptr, outer, channels, inner, eps, momentum, flags,
                                  count, pop_kind, pop_count);
  if (st < 0 || st > BNORM_ERROR_WORKSPACE_TOO_SMALL) fail("status outside the pinned codes");
  if (st == BNORM_ERROR_INTERNAL) fail("internal error");
  if (st == BNORM_ERROR_WORKSPACE_TOO_SMALL && g_ws_mode != 3)
    fail("workspace too small without a caller's workspace");
  if (g_ws_mode == 3 && st != BNORM_OK) {
    // one byte short: refused where the call needs its workspace, and
    // otherwise as the plain entry point does
    if (!buf.same(before)) fail("a call with a short workspace wrote into a buffer");
    g_ws_mode = 0;
    const bnorm_status plain = call<D>(op, ptr, outer, channels, inner, eps, momentum, flags,
                                       count, pop_kind, pop_count);
    if (st == BNORM_ERROR_WORKSPACE_TOO_SMALL ? plain != BNORM_OK : plain != st) {
      std::fprintf(stderr, "%s: short workspace %s, plain %s\n", kOpNames[op],
                   bnorm_status_string(st), bnorm_status_string(plain));
      fail("a short workspace changed the outcome other than by refusing it");
    }
    if (st == BNORM_ERROR_WORKSPACE_TOO_SMALL) ++g_ws_short;
    return;
  }
  // A short workspace may be accepted only by a call that needs none: an
  // empty tensor of an op that then writes its zeros without a kernel.
  if (g_ws_mode == 3 && st == BNORM_OK && g_ws_need > 0 &&
      !(n == 0 && (op == kMoments || op == kBackReduce || op == kBackwardFused)))
    fail("a call accepted a workspace smaller than bnorm_workspace_size said");
  if (st != BNORM_OK) {
    if (std::getenv("BNORM_FUZZ_TRACE"))
      std::fprintf(stderr, "%s: %s\n", kOpNames[op], bnorm_status_string(st));
    if (!buf.same(before)) fail("a failed call wrote into a buffer");
    return;
  }
  ++g_ok[op];
  if (!valid || (!per_channel_only && n < 0)) {
    std::fprintf(stderr, "%s: (%lld, %lld, %lld)\n", kOpNames[op], (long long)outer,
                 (long long)channels, (long long)inner);
    fail("success on sizes that are not valid");
  }
  if ((op == kNormalize || op == kBackApply) && (count <= 1 || count < local))
    fail("success with a count that cannot be the whole batch's");
  const bool relu6 = (flags & BNORM_FLAG_RELU6) != 0;
  const bool activated = (flags & BNORM_FLAG_RELU) != 0 || relu6;
  const bool frozen = (flags & BNORM_FLAG_FROZEN_STATS) != 0;
  // (flags reach only the functions that take them; RELU6 only the fused ones)
  if ((known_flags(op) & BNORM_FLAG_RELU6) && (flags & BNORM_FLAG_RELU) && relu6) {
    std::fprintf(stderr, "%s: flags %#x, (%lld, %lld, %lld)\n", kOpNames[op], flags, (long long)outer,
                 (long long)channels, (long long)inner);
    fail("success with both RELU and RELU6");
  }
  // (the activation after the residual add: max(v, 0), or min(max(v, 0), 6))
  const auto act = [activated, relu6](double v) {
    return !activated ? v : v < 0 ? 0 : relu6 && v > 6 ? 6 : v;
  };
  // the backward's mask: where the activation was open at its output y
  const auto open = [relu6](double y) { return y > 0 && (!relu6 || y < 6); };
  // The overlaps of this call's arguments, as the header states its rules:
  // an output may be exactly an input it may replace; any other overlap of
  // an output with another argument must have been refused.
  const std::vector<Arg> args = args_of<D>(op, ptr, nd, nc, parts, pop_kind);
  bool aliased = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (!args[i].out) continue;
    for (size_t j = 0; j < args.size(); ++j) {
      if (i == j || !overlaps(args[i], args[j])) continue;
      const bool exact = args[i].p == args[j].p && args[i].bytes == args[j].bytes;
      if (exact && !args[j].out && alias_allowed(op, args[i].id, args[j].id)) {
        aliased = true;
        continue;
      }
      std::fprintf(stderr, "%s: %s over %s\n", kOpNames[op], slot_name(args[i].id),
                   slot_name(args[j].id));
      fail("an overlap the header does not allow was accepted");
    }
  }
  // Inputs moved onto other buffers read those buffers' values; an allowed
  // aliasing must give the bits of the call with separate buffers holding
  // the same input values.
  if (aliased || how.any_alias() || how.any_partial()) {
    Buffers<D> b2 = before;
    Pointing sep;
    sep.data_null = how.data_null, sep.par_null = how.par_null, sep.dbl_null = how.dbl_null;
    if (how.dbl_overlap && ptr.q[MEAN]) sep.dbl_null &= ~(1u << M2);  // m2 was given
    const Ptrs<D> p2 = point(b2, sep);
    const std::vector<Arg> args2 = args_of<D>(op, p2, nd, nc, parts, pop_kind);
    for (size_t j = 0; j < args.size(); ++j) {
      if (!args[j].in || !args[j].p || args[j].p == args2[j].p) continue;
      // the input's values as the aliased call saw them: `before`'s bytes
      // at the same place
      const void* src = relocate(buf, before, args[j].p);
      if (!src) return;  // outside the arenas (cannot happen)
      std::memcpy(const_cast<void*>(args2[j].p), src, static_cast<size_t>(args[j].bytes));
    }
    const bnorm_status st2 = call<D>(op, p2, outer, channels, inner, eps, momentum, flags,
                                     count, pop_kind, pop_count);
    if (st2 != BNORM_OK) {
      std::fprintf(stderr, "%s: %s\n", kOpNames[op], bnorm_status_string(st2));
      fail("the call with separate buffers failed where the aliased one succeeded");
    }
    for (size_t i = 0; i < args.size(); ++i) {
      if (!args[i].out || !args[i].p) continue;
      if (std::memcmp(args[i].p, args2[i].p, static_cast<size_t>(args[i].bytes)) != 0) {
        std::fprintf(stderr, "%s: output %s\n", kOpNames[op], slot_name(args[i].id));
        fail("an aliased call's result differs from the call with separate buffers");
      }
    }
    ++g_aliased_ok[op];
    return;
  }
  // Success: compare with double precision where the inputs are moderate
  // and every buffer is present.
  if (how.data_null || how.par_null || how.dbl_null) {
    // optional data buffers absent are fine; others: no oracle
    const uint32_t optional = 1u << R | 1u << YF | 1u << DR;
    if ((how.data_null & ~optional) || how.par_null || how.dbl_null) return;
  }
  for (int s = 0; s < NDATA; ++s)
    for (int64_t i = 0; i < nd; ++i) scan.add(D::get(before.data[s * (nd + 2) + 1 + i]));
  for (auto v : before.par) scan.add(v);
  if (!scan.finite || scan.x > 1e6 || !(eps >= 1e-6 && eps <= 1e6)) return;
  if (channels != nc) return;  // an empty tensor of more channels than the harness holds
  Buffers<D>& b0 = const_cast<Buffers<D>&>(before);
  auto at = [&](int s, int64_t i) { return D::get(b0.d(s)[i]); };
  auto now = [&](int s, int64_t i) { return D::get(buf.d(s)[i]); };
  auto par0 = [&](int s, int64_t c) { return static_cast<double>(b0.p(s)[c]); };
  auto parn = [&](int s, int64_t c) { return static_cast<double>(buf.p(s)[c]); };
  auto idx = [&](int64_t o, int64_t c, int64_t i) { return (o * channels + c) * inner + i; };
  const bool has_res = !(how.data_null >> R & 1);
  const double tol = D::tol, ptol = sizeof(P) == 4 ? 1e-4 : 1e-10;
  // a data result: rounded once to the dtype, so within tol of the scale
  // plus the smallest subnormal; none where it is beyond the dtype's range
  auto check_data = [&](double got, double want, double scale, const char* what) {
    if (std::fabs(want) + tol * scale >= D::maxv) return;
    check_close(got, want, scale + D::tiny / tol, tol, what);
  };
  const double bx = scan.x;
  ++g_checked[op];
  if (op == kTrain || op == kTrainFused || op == kNormalize) {
    const double m = static_cast<double>(outer) * static_cast<double>(inner);
    for (int64_t c = 0; c < channels; ++c) {
      double mean, var;
      if (op == kNormalize) {
        mean = b0.q(MEAN)[c];
        var = b0.q(M2)[c] / static_cast<double>(count);
      } else {
        double s = 0, s2 = 0;
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t i = 0; i < inner; ++i) s += at(X, idx(o, c, i));
        mean = s / m;
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t i = 0; i < inner; ++i) {
            const double dv = at(X, idx(o, c, i)) - mean;
            s2 += dv * dv;
          }
        var = s2 / m;
      }
      const double inv = 1 / std::sqrt(var + eps);
      const double K = (bx + std::fabs(mean)) * inv;
      check_close(parn(SM, c), mean, bx + std::fabs(mean), ptol, "save_mean");
      check_close(parn(SI, c), inv, inv * (1 + K * K), ptol, "save_invstd");
      const double g = par0(W, c), be = par0(B, c);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          double want = (at(X, k) - mean) * inv * g + be;
          double scale = std::fabs(g) * (K + 1) + std::fabs(be);
          if (op == kTrainFused && has_res) want += at(R, k), scale += bx;
          if (op == kTrainFused) want = act(want);
          check_data(now(Y, k), want, scale, "y");
        }
    }
  } else if (op == kInfer || op == kInferFused) {
    for (int64_t c = 0; c < channels; ++c) {
      const double inv = 1 / std::sqrt(par0(RV, c) + eps);
      const double g = par0(W, c), be = par0(B, c);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          double want = (at(X, k) - par0(RM, c)) * inv * g + be;
          double scale = 2 * bx * inv * std::fabs(g) + std::fabs(be);
          if (op == kInferFused && has_res) want += at(R, k), scale += bx;
          if (op == kInferFused) want = act(want);
          check_data(now(Y, k), want, scale, "y");
        }
    }
  } else if (op == kBackward || op == kBackwardFused || op == kBackReduce || op == kBackApply) {
    // the mask from y (exact); a recomputed mask (y absent) can differ
    // within rounding of 0, so no oracle then
    const bool mask_y = op == kBackwardFused && activated && !(how.data_null >> YF & 1);
    if (op == kBackwardFused && activated && !mask_y) return;
    for (int64_t c = 0; c < channels; ++c) {
      double g = 0, gx = 0, gabs = 0;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          const double gi = mask_y && !open(at(YF, k)) ? 0.0 : at(DY, k);
          g += gi;
          gx += gi * (at(X, k) - par0(SM, c));
          gabs += std::fabs(gi);
          if (op == kBackwardFused && !(how.data_null >> DR & 1) && now(DR, k) != gi)
            fail("dresidual is not the masked dy");
        }
      const double scale_gx = gabs * 2 * (bx + std::fabs(par0(SM, c)));
      if (op == kBackReduce) {
        check_close(buf.q(S1)[c], g, gabs, ptol, "sum_dy");
        check_close(buf.q(S2)[c], gx, scale_gx, ptol, "sum_dy_xmu");
        continue;
      }
      if (op == kBackApply) {
        g = b0.q(S1)[c];
        gx = b0.q(S2)[c];
      }
      const double is = par0(SI, c);
      const double sg = op == kBackApply ? std::fabs(g) + 1 : gabs;
      const double sgx = op == kBackApply ? std::fabs(gx) + 1 : scale_gx;
      check_close(parn(DB, c), g, sg, ptol, "dbias");
      check_close(parn(DW, c), gx * is, sgx * is, ptol, "dweight");
      // dx = k*g - k*sum_g/m - (x - mean) * k * is^2 * sum_gx / m
      const double gam = par0(W, c), kk = gam * is;
      const double m = op == kBackApply ? static_cast<double>(count)
                                        : static_cast<double>(outer) * static_cast<double>(inner);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          const double gi = mask_y && !open(at(YF, k)) ? 0.0 : at(DY, k);
          const double xm = at(X, k) - par0(SM, c);
          const double want = frozen && op != kBackApply
                                  ? gi * kk
                                  : kk * gi - kk * g / m - xm * kk * is * is * gx / m;
          const double scale = std::fabs(kk) * (bx + std::fabs(g) / m +
                                                (bx + std::fabs(par0(SM, c))) * is * is * sgx / m);
          if (!(how.data_null >> DX & 1)) check_data(now(DX, k), want, scale, "dx");
        }
    }
  } else if (op == kFold) {
    for (int64_t c = 0; c < channels; ++c) {
      const double a = par0(W, c) / std::sqrt(par0(RV, c) + eps);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = idx(o, c, i);
          const double lw = static_cast<double>(reinterpret_cast<const P*>(b0.d(LW))[k]);
          const double got = static_cast<double>(reinterpret_cast<const P*>(buf.d(DX))[k]);
          check_close(got, lw * a, std::fabs(lw * a), ptol, "folded weight");
        }
      check_close(parn(DB, c), (par0(LB, c) - par0(RM, c)) * a + par0(B, c),
                  (bx * 2) * std::fabs(a) + std::fabs(par0(B, c)), ptol, "folded bias");
    }
  } else if (op == kScaleShift) {
    for (int64_t c = 0; c < channels; ++c) {
      const double a = par0(W, c) / std::sqrt(par0(RV, c) + eps);
      check_close(parn(DW, c), a, std::fabs(a), ptol, "scale");
      check_close(parn(DB, c), par0(B, c) - par0(RM, c) * a,
                  bx * std::fabs(a) + std::fabs(par0(B, c)), ptol, "shift");
    }
  } else if (op == kMoments) {
    const double m = static_cast<double>(outer) * static_cast<double>(inner);
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
      check_close(buf.q(MEAN)[c], mean, bx, D::mtol, "moments mean");
      check_close(buf.q(M2)[c], s2, (m + 1) * bx * bx, D::mtol, "moments m2");
    }
  } else if (op == kMerge) {
    int64_t total = 0;
    for (int64_t k = 0; k < parts; ++k) total += b0.counts[k];
    if (buf.count_out != total) fail("merged count");
    for (int64_t c = 0; c < channels && total > 0; ++c) {
      double s = 0, scale = 0;
      for (int64_t k = 0; k < parts; ++k) {
        s += b0.counts[k] * b0.q(MEAN)[k * channels + c];
        scale = std::fmax(scale, b0.counts[k] ? std::fabs(b0.q(MEAN)[k * channels + c]) : 0);
      }
      const double mean = s / total;
      double q = 0, qs = 0;
      for (int64_t k = 0; k < parts; ++k) {
        if (!b0.counts[k]) continue;
        const double dv = b0.q(MEAN)[k * channels + c] - mean;
        q += b0.q(M2)[k * channels + c] + b0.counts[k] * dv * dv;
        qs += b0.q(M2)[k * channels + c] + b0.counts[k] * scale * scale;
      }
      check_close(buf.q(S1)[c], mean, scale, 1e-10, "merged mean");
      check_close(buf.q(S2)[c], q, qs, 1e-10, "merged m2");
    }
  } else if (op == kPopulation && pop_kind == 1) {
    // one more batch of pop_count values: the result moves as the formulas say
    int64_t nb0 = 0, nv0 = 0, nb1 = 0, nv1 = 0;
    std::vector<double> m0(static_cast<size_t>(nc) + 1), v0(static_cast<size_t>(nc) + 1),
        m1(static_cast<size_t>(nc) + 1), v1(static_cast<size_t>(nc) + 1);
    if (bnorm_population_result(nc, b0.st(0), &nb0, &nv0, m0.data(), v0.data()) != BNORM_OK ||
        bnorm_population_result(nc, buf.st(0), &nb1, &nv1, m1.data(), v1.data()) != BNORM_OK)
      fail("population_result after a successful add");
    if (nb1 != nb0 + 1 || nv1 != nv0 + pop_count) {
      std::fprintf(stderr, "batches %lld -> %lld, values %lld -> %lld, added %lld\n", (long long)nb0,
                   (long long)nb1, (long long)nv0, (long long)nv1, (long long)pop_count);
      fail("population counts");
    }
    const double w0 = static_cast<double>(nv0), w = static_cast<double>(pop_count);
    for (int64_t c = 0; c < nc; ++c) {
      const double mean = (w0 * m0[c] + w * b0.q(MEAN)[c]) / (w0 + w);
      const double var = (nv0 ? w0 * v0[c] : 0.0) + b0.q(M2)[c] * w / (w - 1);
      check_close(m1[c], mean, std::fabs(m0[c]) + std::fabs(b0.q(MEAN)[c]) + 1, 1e-9, "population mean");
      check_close(v1[c], var / (w0 + w), std::fabs(var) / (w0 + w) + 1, 1e-9, "population var");
    }
  }
}

void misc(FuzzedDataProvider& in) {
  ++g_calls[kMisc];
  const int32_t code = in.ConsumeIntegral<int32_t>();
  const char* s = bnorm_status_string(code);
  if (!s || !s[0]) fail("status string empty");
  if (bnorm_version_number() != BNORM_VERSION_NUMBER) fail("version number");
  if (!bnorm_version_string()[0] || !bnorm_kernel_isa()[0] || !bnorm_threading_backend()[0])
    fail("an empty string");
  const int n = in.ConsumeIntegral<int>();
  bnorm_set_num_threads(n);
  if (bnorm_get_num_threads() < 1) fail("thread count below 1");
  const int mt = in.ConsumeIntegralInRange(-2, 3);
  const bnorm_status st = bnorm_set_parallel_for(in.ConsumeBool() ? serial_for : nullptr, nullptr, mt);
  if (st != BNORM_OK && st != BNORM_ERROR_INVALID_ARGUMENT) fail("set_parallel_for status");
  if (st == BNORM_OK && std::strcmp(bnorm_threading_backend(), "host") == 0 &&
      bnorm_get_num_threads() != mt)
    fail("host pool thread count");
  ++g_ok[kMisc];
  bnorm_set_parallel_for(nullptr, nullptr, 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  switch (in.ConsumeIntegralInRange(0, 10)) {
    case 0: {
      // an unknown dtype: every data entry point refuses it without touching memory
      const bnorm_dtype dt = in.ConsumeIntegral<int32_t>();
      if (dt == BNORM_FLOAT32 || dt == BNORM_FLOAT64 || dt == BNORM_FLOAT16 ||
          dt == BNORM_BFLOAT16)
        return 0;
      float buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
      float copy[8];
      std::memcpy(copy, buf, sizeof buf);
      double d[4] = {0, 0, 0, 0};
      const bnorm_status s[] = {
          bnorm_forward_inference(dt, 1, 1, 2, buf, buf + 2, buf + 4, buf + 5, nullptr, nullptr, 1e-5),
          bnorm_forward_training(dt, 1, 1, 2, buf, buf + 2, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1e-5, 0.1, 0),
          bnorm_backward(dt, 1, 1, 2, buf, buf + 2, buf + 4, buf + 5, nullptr, buf + 6, nullptr, nullptr, 0),
          bnorm_moments(dt, 1, 1, 2, buf, d, d + 1),
          bnorm_inference_scale_shift(dt, 1, buf, buf + 1, nullptr, nullptr, 1e-5, buf + 2, buf + 3),
      };
      for (bnorm_status v : s)
        if (v != BNORM_ERROR_UNSUPPORTED_DTYPE) fail("unknown dtype accepted");
      if (std::memcmp(copy, buf, sizeof buf) != 0 || d[0] != 0 || d[1] != 0)
        fail("unknown dtype: a buffer was written");
      return 0;
    }
    case 1: misc(in); return 0;
    case 2: case 3: case 4: run<F32>(in); return 0;
    case 5: case 6: run<F64>(in); return 0;
    case 7: case 8: run<F16>(in); return 0;
    default: run<BF16>(in); return 0;
  }
}
