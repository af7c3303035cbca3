// Population statistics (Algorithm 2, steps 8-12): an accumulator of batch
// means and unbiased batch variances, weighted by batch size, in the
// caller's memory. O(channels) per batch, plain double arithmetic.
#include <cmath>

#include "api_common.hpp"

using namespace bnorm;

namespace {

// Layout of the caller's state array (private to this file).
constexpr double kMagic = 1651403634.0;  // "bnor" as digits: marks an initialized state
enum Header { kTag, kChannels, kBatches, kValues, kHeader };
struct State {
  double* h;  // header
  double *shift, *s, *sc, *v, *vc;  // per channel
  State(double* p, int64_t C)
      : h(p), shift(p + kHeader), s(shift + C), sc(s + C), v(sc + C), vc(v + C) {}
};

// Neumaier's compensated addition: (sum + comp) carries the exact total to
// about one rounding, whatever the number of terms.
inline void add(double& sum, double& comp, double x) {
  const double t = sum + x;
  if (std::fabs(sum) >= std::fabs(x))
    comp += (sum - t) + x;
  else
    comp += (x - t) + sum;
  sum = t;
}

bool state_size_ok(int64_t channels) {
  return channels >= 0 && checked_elements(5, channels, 1, 8) >= 0 &&
         channels <= (INT64_MAX / 8 - kHeader) / 5;
}

// Counts are kept in doubles, exact up to 2^53 (9.007e15): larger totals of
// values or batches are refused rather than rounded (and their conversion
// back to int64 could overflow).
constexpr double kMaxCount = 9007199254740992.0;  // 2^53

bool initialized(const double* p, int64_t channels) {
  return p[kTag] == kMagic && p[kChannels] == static_cast<double>(channels) &&
         p[kBatches] >= 0 && p[kBatches] <= kMaxCount && p[kValues] >= 0 &&
         p[kValues] <= kMaxCount;
}

int64_t state_bytes(int64_t channels) { return (5 * channels + kHeader) * 8; }

}  // namespace

extern "C" {

BNORM_API bnorm_status bnorm_population_init(int64_t channels, double* state) {
  if (!state_size_ok(channels)) return BNORM_ERROR_INVALID_SIZE;
  if (!state) return BNORM_ERROR_NULL_POINTER;
  const int64_t n = 5 * channels + kHeader;
  for (int64_t i = 0; i < n; ++i) state[i] = 0.0;
  state[kTag] = kMagic;
  state[kChannels] = static_cast<double>(channels);
  return BNORM_OK;
}

BNORM_API bnorm_status bnorm_population_add(int64_t channels, double* state,
                                            int64_t count, const double* mean,
                                            const double* m2) {
  if (!state_size_ok(channels)) return BNORM_ERROR_INVALID_SIZE;
  if (!state || !mean || !m2) return BNORM_ERROR_NULL_POINTER;
  if (count <= 1) return BNORM_ERROR_TOO_FEW_VALUES;
  if (!initialized(state, channels)) return BNORM_ERROR_INVALID_ARGUMENT;
  if (static_cast<double>(count) > kMaxCount - state[kValues] ||
      state[kBatches] + 1 > kMaxCount)
    return BNORM_ERROR_INVALID_ARGUMENT;
  const Span outs[] = {{state, state_bytes(channels)}};
  const Span ins[] = {{mean, channels * 8}, {m2, channels * 8}};
  if (any_forbidden_overlap(outs, 1, ins, 2, nullptr, nullptr, -1))
    return BNORM_ERROR_OVERLAP;
  State st(state, channels);
  const double w = static_cast<double>(count);
  const bool first = st.h[kBatches] == 0;
  for (int64_t c = 0; c < channels; ++c) {
    if (first) st.shift[c] = mean[c];
    add(st.s[c], st.sc[c], w * (mean[c] - st.shift[c]));
    add(st.v[c], st.vc[c], m2[c] * (w / (w - 1.0)));  // m_B * unbiased var_B
  }
  st.h[kBatches] += 1;
  st.h[kValues] += w;
  return BNORM_OK;
}

BNORM_API bnorm_status bnorm_population_merge(int64_t channels, double* state,
                                              const double* other) {
  if (!state_size_ok(channels)) return BNORM_ERROR_INVALID_SIZE;
  if (!state || !other) return BNORM_ERROR_NULL_POINTER;
  if (!initialized(state, channels) || !initialized(other, channels))
    return BNORM_ERROR_INVALID_ARGUMENT;
  if (other[kValues] > kMaxCount - state[kValues] ||
      other[kBatches] > kMaxCount - state[kBatches])
    return BNORM_ERROR_INVALID_ARGUMENT;
  const Span outs[] = {{state, state_bytes(channels)}};
  const Span ins[] = {{other, state_bytes(channels)}};
  if (any_forbidden_overlap(outs, 1, ins, 1, nullptr, nullptr, -1))
    return BNORM_ERROR_OVERLAP;
  if (other[kBatches] == 0) return BNORM_OK;
  State a(state, channels);
  const State b(const_cast<double*>(other), channels);
  const bool empty = a.h[kBatches] == 0;
  for (int64_t c = 0; c < channels; ++c) {
    if (empty) a.shift[c] = b.shift[c];
    // b's sums are deviations from b's shift: move them to a's
    add(a.s[c], a.sc[c], b.s[c]);
    add(a.s[c], a.sc[c], b.sc[c]);
    add(a.s[c], a.sc[c], b.h[kValues] * (b.shift[c] - a.shift[c]));
    add(a.v[c], a.vc[c], b.v[c]);
    add(a.v[c], a.vc[c], b.vc[c]);
  }
  a.h[kBatches] += b.h[kBatches];
  a.h[kValues] += b.h[kValues];
  return BNORM_OK;
}

BNORM_API bnorm_status bnorm_population_result(int64_t channels,
                                               const double* state,
                                               int64_t* batches,
                                               int64_t* values, double* mean,
                                               double* var) {
  if (!state_size_ok(channels)) return BNORM_ERROR_INVALID_SIZE;
  if (!state) return BNORM_ERROR_NULL_POINTER;
  if (!initialized(state, channels)) return BNORM_ERROR_INVALID_ARGUMENT;
  const Span outs[] = {{batches, 8}, {values, 8}, {mean, channels * 8}, {var, channels * 8}};
  const Span ins[] = {{state, state_bytes(channels)}};
  if (any_forbidden_overlap(outs, 4, ins, 1, nullptr, nullptr, -1))
    return BNORM_ERROR_OVERLAP;
  const State st(const_cast<double*>(state), channels);
  const double n = st.h[kValues];
  for (int64_t c = 0; c < channels; ++c) {
    if (mean) mean[c] = n > 0 ? st.shift[c] + (st.s[c] + st.sc[c]) / n : 0.0;
    if (var) var[c] = n > 0 ? (st.v[c] + st.vc[c]) / n : 1.0;
  }
  if (batches) *batches = static_cast<int64_t>(st.h[kBatches]);
  if (values) *values = static_cast<int64_t>(n);
  return BNORM_OK;
}

}  // extern "C"
