// The split phases of training (bnorm.h, "Statistics across processes"):
// argument checks, then the kernels of forward.cpp and backward.cpp
// that the one-process entry points are made of. Every check runs before any
// write.
#include "api_common.hpp"
#include "kernels.hpp"

using namespace bnorm;

namespace {

// The count of the whole batch must cover the local shard, and training
// needs more than one value per channel. outer * inner is formed only once
// channels >= 1, when it is at most the tensor's checked element count (with
// channels == 0 any outer and inner pass checked_elements, and their
// product can overflow).
bnorm_status check_count(int64_t count, int64_t outer, int64_t channels, int64_t inner) {
  if (channels == 0 || count <= 1) return BNORM_ERROR_TOO_FEW_VALUES;
  if (count < outer * inner) return BNORM_ERROR_INVALID_ARGUMENT;
  return BNORM_OK;
}

// Parts [lo, hi) of channel c merged as a balanced binary tree in index
// order: rounding errors grow with the tree's depth, log2(parts), not with
// the number of parts as in a left-to-right chain. A fixed shape, so the
// same list always gives the same bits.
Moments merge_tree(int64_t lo, int64_t hi, int64_t channels, int64_t c,
                   const int64_t* counts, const double* means, const double* m2s) {
  if (hi - lo == 1) {
    if (counts[lo] == 0) return Moments();
    return Moments{static_cast<double>(counts[lo]), means[lo * channels + c],
                   m2s[lo * channels + c]};
  }
  if (hi <= lo) return Moments();
  const int64_t mid = lo + (hi - lo) / 2;
  Moments a = merge_tree(lo, mid, channels, c, counts, means, m2s);
  merge_into(a, merge_tree(mid, hi, channels, c, counts, means, m2s));
  return a;
}

// The result of an empty shard: two arrays of n zeros.
bnorm_status zero_pair(double* a, double* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = b[i] = 0.0;
  return BNORM_OK;
}

}  // namespace

extern "C" {

BNORM_API bnorm_status bnorm_moments(bnorm_dtype dtype, int64_t outer,
                                     int64_t channels, int64_t inner,
                                     const void* x, double* mean, double* m2) {
  return bnorm_moments_ws(dtype, outer, channels, inner, x, mean, m2, nullptr, 0);
}

BNORM_API bnorm_status bnorm_moments_ws(bnorm_dtype dtype, int64_t outer,
                                        int64_t channels, int64_t inner, const void* x,
                                        double* mean, double* m2, void* workspace,
                                        size_t workspace_bytes) {
  int64_t es, n;
  const bnorm_status st = check_tensor(dtype, outer, channels, inner, true, &es, &n);
  if (st != BNORM_OK) return st;
  if (!x || !mean || !m2) return BNORM_ERROR_NULL_POINTER;
  const int64_t par = channels * 8;
  const Span outs[] = {{mean, par}, {m2, par}, workspace_span(workspace, workspace_bytes)};
  const Span ins[] = {{x, n * es}};
  if (any_forbidden_overlap(outs, 3, ins, 1, nullptr, nullptr, -1))
    return BNORM_ERROR_OVERLAP;
  if (n == 0) return zero_pair(mean, m2, channels);
  return run_kernel(BNORM_OP_MOMENTS, dtype, outer, channels, inner, workspace,
                    workspace_bytes, [&](auto& a) {
    set(a.x, x), a.out_mean = mean, a.out_m2 = m2;
  });
}

BNORM_API bnorm_status bnorm_merge_moments(int64_t parts, int64_t channels,
                                           const int64_t* counts,
                                           const double* means,
                                           const double* m2s, int64_t* count,
                                           double* mean, double* m2) {
  const int64_t n = checked_elements(parts, channels, 1, 8);
  if (n < 0 || checked_elements(1, parts, 1, 8) < 0) return BNORM_ERROR_INVALID_SIZE;
  if (!counts || !means || !m2s || !count || !mean || !m2)
    return BNORM_ERROR_NULL_POINTER;
  int64_t total = 0;
  for (int64_t k = 0; k < parts; ++k) {
    if (counts[k] < 0 || counts[k] > INT64_MAX - total)
      return BNORM_ERROR_INVALID_ARGUMENT;
    total += counts[k];
  }
  const Span outs[] = {{count, 8}, {mean, channels * 8}, {m2, channels * 8}};
  const Span ins[] = {{counts, parts * 8}, {means, n * 8}, {m2s, n * 8}};
  if (any_forbidden_overlap(outs, 3, ins, 3, nullptr, nullptr, -1))
    return BNORM_ERROR_OVERLAP;
  for (int64_t c = 0; c < channels; ++c) {
    const Moments tot = merge_tree(0, parts, channels, c, counts, means, m2s);
    mean[c] = tot.mean;
    m2[c] = tot.m2;
  }
  *count = total;
  return BNORM_OK;
}

BNORM_API bnorm_status bnorm_forward_normalize(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* x, void* y, int64_t count, const double* mean,
    const double* m2, const void* weight, const void* bias, void* save_mean,
    void* save_invstd, void* running_mean, void* running_var, double eps,
    double momentum, uint32_t flags) {
  return bnorm_forward_normalize_ws(dtype, outer, channels, inner, x, y, count, mean, m2,
                                    weight, bias, save_mean, save_invstd, running_mean,
                                    running_var, eps, momentum, flags, nullptr, 0);
}

BNORM_API bnorm_status bnorm_forward_normalize_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* x, void* y, int64_t count, const double* mean,
    const double* m2, const void* weight, const void* bias, void* save_mean,
    void* save_invstd, void* running_mean, void* running_var, double eps,
    double momentum, uint32_t flags, void* workspace, size_t workspace_bytes) {
  int64_t es, n;
  bnorm_status st = check_tensor(dtype, outer, channels, inner, true, &es, &n);
  if (st != BNORM_OK) return st;
  if (!x || !y || !mean || !m2) return BNORM_ERROR_NULL_POINTER;
  st = check_training(flags, BNORM_FLAG_BIASED_RUNNING_VAR, eps, running_mean, running_var,
                      momentum);
  if (st != BNORM_OK) return st;
  st = check_count(count, outer, channels, inner);
  if (st != BNORM_OK) return st;
  const int64_t data = n * es, par = channels * param_size_of(dtype);
  const Span outs[] = {{y, data}, {save_mean, par}, {save_invstd, par},
                       {running_mean, par}, {running_var, par},
                       workspace_span(workspace, workspace_bytes)};
  const Span ins[] = {{x, data}, {weight, par}, {bias, par},
                      {mean, channels * 8}, {m2, channels * 8}};
  if (any_forbidden_overlap(outs, 6, ins, 5, x, nullptr, 0))
    return BNORM_ERROR_OVERLAP;
  return run_kernel(BNORM_OP_FORWARD_NORMALIZE, dtype, outer, channels, inner, workspace,
                    workspace_bytes, [&](auto& a) {
    set(a.x, x), set(a.out, y), set(a.weight, weight), set(a.bias, bias);
    a.in_mean = mean, a.in_m2 = m2, a.count = static_cast<double>(count);
    set(a.save_mean, save_mean), set(a.save_invstd, save_invstd);
    set(a.running_mean, running_mean), set(a.running_var, running_var);
    a.eps = eps, a.momentum = momentum, a.unbiased = !(flags & BNORM_FLAG_BIASED_RUNNING_VAR);
  });
}

BNORM_API bnorm_status bnorm_backward_reduce(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* x, const void* mean, double* sum_dy,
    double* sum_dy_xmu) {
  return bnorm_backward_reduce_ws(dtype, outer, channels, inner, dy, x, mean, sum_dy,
                                  sum_dy_xmu, nullptr, 0);
}

BNORM_API bnorm_status bnorm_backward_reduce_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* x, const void* mean, double* sum_dy,
    double* sum_dy_xmu, void* workspace, size_t workspace_bytes) {
  int64_t es, n;
  const bnorm_status st = check_tensor(dtype, outer, channels, inner, true, &es, &n);
  if (st != BNORM_OK) return st;
  if (!dy || !x || !mean || !sum_dy || !sum_dy_xmu) return BNORM_ERROR_NULL_POINTER;
  const int64_t data = n * es;
  const Span outs[] = {{sum_dy, channels * 8}, {sum_dy_xmu, channels * 8},
                       workspace_span(workspace, workspace_bytes)};
  const Span ins[] = {{dy, data}, {x, data}, {mean, channels * param_size_of(dtype)}};
  if (any_forbidden_overlap(outs, 3, ins, 3, nullptr, nullptr, -1))
    return BNORM_ERROR_OVERLAP;
  if (n == 0) return zero_pair(sum_dy, sum_dy_xmu, channels);
  return run_kernel(BNORM_OP_BACKWARD_REDUCE, dtype, outer, channels, inner, workspace,
                    workspace_bytes, [&](auto& a) {
    set(a.dy, dy), set(a.x, x), set(a.mean, mean), a.out_sum_dy = sum_dy, a.out_sum_dy_xmu = sum_dy_xmu;
  });
}

BNORM_API bnorm_status bnorm_backward_apply(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* x, const void* mean, const void* invstd,
    const void* weight, const double* sum_dy, const double* sum_dy_xmu,
    int64_t count, void* dx, void* dweight, void* dbias) {
  return bnorm_backward_apply_ws(dtype, outer, channels, inner, dy, x, mean, invstd, weight,
                                 sum_dy, sum_dy_xmu, count, dx, dweight, dbias, nullptr, 0);
}

BNORM_API bnorm_status bnorm_backward_apply_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* x, const void* mean, const void* invstd,
    const void* weight, const double* sum_dy, const double* sum_dy_xmu,
    int64_t count, void* dx, void* dweight, void* dbias, void* workspace,
    size_t workspace_bytes) {
  int64_t es, n;
  bnorm_status st = check_tensor(dtype, outer, channels, inner, true, &es, &n);
  if (st != BNORM_OK) return st;
  if (!dy || !x || !mean || !invstd || !sum_dy || !sum_dy_xmu)
    return BNORM_ERROR_NULL_POINTER;
  st = check_count(count, outer, channels, inner);
  if (st != BNORM_OK) return st;
  const int64_t data = n * es, par = channels * param_size_of(dtype);
  const Span outs[] = {{dx, data}, {dweight, par}, {dbias, par},
                       workspace_span(workspace, workspace_bytes)};
  const Span ins[] = {{dy, data}, {x, data}, {mean, par}, {invstd, par},
                      {weight, par}, {sum_dy, channels * 8},
                      {sum_dy_xmu, channels * 8}};
  if (any_forbidden_overlap(outs, 4, ins, 7, dy, x, 0))
    return BNORM_ERROR_OVERLAP;
  return run_kernel(BNORM_OP_BACKWARD_APPLY, dtype, outer, channels, inner, workspace,
                    workspace_bytes, [&](auto& a) {
    set(a.dy, dy), set(a.x, x), set(a.out, dx), set(a.dweight, dweight), set(a.dbias, dbias);
    set(a.mean, mean), set(a.invstd, invstd), set(a.weight, weight);
    a.in_sum_dy = sum_dy, a.in_sum_dy_xmu = sum_dy_xmu, a.count = static_cast<double>(count);
  });
}

}  // extern "C"
