// The C API: argument checks, dtype dispatch, and the wall that keeps C++
// exceptions inside the library. Every check runs before any write.
#include "api_common.hpp"
#include "kernels.hpp"

#define BNORM_STR2(x) #x
#define BNORM_STR(x) BNORM_STR2(x)

using namespace bnorm;

extern "C" {

BNORM_API const char* bnorm_status_string(bnorm_status status) {
  switch (status) {
    case BNORM_OK: return "success";
    case BNORM_ERROR_NULL_POINTER: return "a required pointer argument is NULL";
    case BNORM_ERROR_INVALID_SIZE:
      return "invalid size: negative, or the element count or a size in bytes overflows";
    case BNORM_ERROR_UNSUPPORTED_DTYPE: return "unsupported dtype";
    case BNORM_ERROR_INVALID_EPS: return "eps must be finite and > 0";
    case BNORM_ERROR_INVALID_MOMENTUM: return "momentum must be in [0, 1]";
    case BNORM_ERROR_TOO_FEW_VALUES:
      return "training needs more than 1 value per channel";
    case BNORM_ERROR_INVALID_FLAGS: return "unknown flag bits";
    case BNORM_ERROR_OVERLAP: return "buffers overlap where they must not";
    case BNORM_ERROR_OUT_OF_MEMORY: return "out of memory";
    case BNORM_ERROR_INVALID_ARGUMENT: return "inconsistent arguments";
    case BNORM_ERROR_INTERNAL: return "internal error in bnorm (please report)";
    case BNORM_ERROR_WORKSPACE_TOO_SMALL:
      return "the workspace is smaller than bnorm_workspace_size says the call needs";
    default: return "unknown bnorm status code";
  }
}

BNORM_API int bnorm_version_number(void) { return BNORM_VERSION_NUMBER; }

BNORM_API const char* bnorm_kernel_isa(void) { return kernel_isa(); }

BNORM_API const char* bnorm_version_string(void) {
  return BNORM_STR(BNORM_VERSION_MAJOR) "." BNORM_STR(
      BNORM_VERSION_MINOR) "." BNORM_STR(BNORM_VERSION_PATCH);
}

BNORM_API bnorm_status bnorm_forward_training(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* x, void* y, const void* weight, const void* bias,
    void* save_mean, void* save_invstd, void* running_mean, void* running_var,
    double eps, double momentum, uint32_t flags) {
  if ((flags & ~uint32_t(BNORM_FLAG_BIASED_RUNNING_VAR)) != 0 && elem_size_of(dtype) != 0 &&
      checked_elements(outer, channels, inner, elem_size_of(dtype)) >= 0 && x && y)
    return BNORM_ERROR_INVALID_FLAGS;  // RELU is for the _fused entry point
  return bnorm_forward_training_fused(dtype, outer, channels, inner, x, nullptr, y,
                                      weight, bias, save_mean, save_invstd,
                                      running_mean, running_var, eps, momentum, flags);
}

BNORM_API bnorm_status bnorm_forward_training_fused(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* x, const void* residual, void* y, const void* weight,
    const void* bias, void* save_mean, void* save_invstd, void* running_mean,
    void* running_var, double eps, double momentum, uint32_t flags) {
  return bnorm_forward_training_ws(dtype, outer, channels, inner, x, residual, y, weight,
                                   bias, save_mean, save_invstd, running_mean, running_var,
                                   eps, momentum, flags, nullptr, 0);
}

BNORM_API bnorm_status bnorm_forward_training_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* x, const void* residual, void* y, const void* weight,
    const void* bias, void* save_mean, void* save_invstd, void* running_mean,
    void* running_var, double eps, double momentum, uint32_t flags,
    void* workspace, size_t workspace_bytes) {
  int64_t es, n;
  bnorm_status st = check_tensor(dtype, outer, channels, inner, false, &es, &n);
  if (st != BNORM_OK) return st;
  if (!x || !y) return BNORM_ERROR_NULL_POINTER;
  st = check_training(flags, BNORM_FLAG_BIASED_RUNNING_VAR | kActivationFlags, eps,
                      running_mean, running_var, momentum);
  if (st != BNORM_OK) return st;
  if (!valid_activation(flags)) return BNORM_ERROR_INVALID_FLAGS;
  if (channels == 0 || outer * inner <= 1) return BNORM_ERROR_TOO_FEW_VALUES;
  const int64_t data = n * es, par = channels * param_size_of(dtype);
  const Span outs[] = {{y, data}, {save_mean, par}, {save_invstd, par},
                       {running_mean, par}, {running_var, par},
                       workspace_span(workspace, workspace_bytes)};
  const Span ins[] = {{x, data}, {residual, data}, {weight, par}, {bias, par}};
  if (any_forbidden_overlap(outs, 6, ins, 4, x, residual, 0))
    return BNORM_ERROR_OVERLAP;
  return run_kernel(BNORM_OP_FORWARD_TRAINING, dtype, outer, channels, inner, workspace,
                    workspace_bytes, [&](auto& a) {
    set(a.x, x), set(a.residual, residual), set(a.out, y);
    set(a.weight, weight), set(a.bias, bias);
    set(a.save_mean, save_mean), set(a.save_invstd, save_invstd);
    set(a.running_mean, running_mean), set(a.running_var, running_var);
    a.eps = eps, a.momentum = momentum;
    a.unbiased = !(flags & BNORM_FLAG_BIASED_RUNNING_VAR);
    set_activation(a, flags);
  });
}

BNORM_API bnorm_status bnorm_forward_inference(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* x, void* y, const void* mean, const void* var,
    const void* weight, const void* bias, double eps) {
  return bnorm_forward_inference_fused(dtype, outer, channels, inner, x, nullptr,
                                       y, mean, var, weight, bias, eps, 0);
}

BNORM_API bnorm_status bnorm_forward_inference_fused(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* x, const void* residual, void* y, const void* mean,
    const void* var, const void* weight, const void* bias, double eps,
    uint32_t flags) {
  int64_t es, n;
  const bnorm_status st = check_tensor(dtype, outer, channels, inner, false, &es, &n);
  if (st != BNORM_OK) return st;
  if (!x || !y || !mean || !var) return BNORM_ERROR_NULL_POINTER;
  if ((flags & ~kActivationFlags) != 0 || !valid_activation(flags))
    return BNORM_ERROR_INVALID_FLAGS;
  if (!valid_eps(eps)) return BNORM_ERROR_INVALID_EPS;
  const int64_t data = n * es, par = channels * param_size_of(dtype);
  const Span outs[] = {{y, data}};
  const Span ins[] = {{x, data}, {residual, data}, {mean, par}, {var, par},
                      {weight, par}, {bias, par}};
  if (any_forbidden_overlap(outs, 1, ins, 6, x, residual, 0))
    return BNORM_ERROR_OVERLAP;
  if (n == 0) return BNORM_OK;
  // (the inference path needs no workspace: nothing here allocates)
  return run_kernel(BNORM_OP_FORWARD_INFERENCE, dtype, outer, channels, inner, nullptr, 0,
                    [&](auto& a) {
    set(a.x, x), set(a.residual, residual), set(a.out, y);
    set(a.mean, mean), set(a.var, var), set(a.weight, weight), set(a.bias, bias);
    a.eps = eps;
    set_activation(a, flags);
  });
}

BNORM_API bnorm_status bnorm_backward(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* x, const void* mean, const void* invstd,
    const void* weight, void* dx, void* dweight, void* dbias,
    uint32_t flags) {
  if ((flags & ~uint32_t(BNORM_FLAG_FROZEN_STATS)) != 0 && elem_size_of(dtype) != 0 &&
      checked_elements(outer, channels, inner, elem_size_of(dtype)) >= 0 && dy && x &&
      mean && invstd)
    return BNORM_ERROR_INVALID_FLAGS;  // RELU is for the _fused entry point
  return bnorm_backward_fused(dtype, outer, channels, inner, dy, x, nullptr, mean,
                              invstd, weight, nullptr, dx, dweight, dbias, nullptr,
                              flags);
}

BNORM_API bnorm_status bnorm_backward_fused(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* x, const void* y, const void* mean,
    const void* invstd, const void* weight, const void* bias, void* dx,
    void* dweight, void* dbias, void* dresidual, uint32_t flags) {
  return bnorm_backward_ws(dtype, outer, channels, inner, dy, x, y, mean, invstd, weight,
                           bias, dx, dweight, dbias, dresidual, flags, nullptr, 0);
}

BNORM_API bnorm_status bnorm_backward_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* x, const void* y, const void* mean,
    const void* invstd, const void* weight, const void* bias, void* dx,
    void* dweight, void* dbias, void* dresidual, uint32_t flags,
    void* workspace, size_t workspace_bytes) {
  int64_t es, n;
  const bnorm_status st = check_tensor(dtype, outer, channels, inner, false, &es, &n);
  if (st != BNORM_OK) return st;
  if (!dy || !x || !mean || !invstd) return BNORM_ERROR_NULL_POINTER;
  if ((flags & ~(BNORM_FLAG_FROZEN_STATS | kActivationFlags)) != 0 || !valid_activation(flags))
    return BNORM_ERROR_INVALID_FLAGS;
  const bool frozen = (flags & BNORM_FLAG_FROZEN_STATS) != 0;
  if (!frozen && (channels == 0 || outer * inner <= 1))
    return BNORM_ERROR_TOO_FEW_VALUES;
  const int64_t data = n * es, par = channels * param_size_of(dtype);
  // dx and dresidual may each be exactly one of the data inputs (in place)
  const Span outs[] = {{dx, data}, {dresidual, data}, {dweight, par}, {dbias, par},
                       workspace_span(workspace, workspace_bytes)};
  const Span ins[] = {{dy, data}, {x, data}, {y, data}, {mean, par}, {invstd, par},
                      {weight, par}, {bias, par}};
  if (any_forbidden_overlap_data(outs, 5, 2, ins, 7, 3)) return BNORM_ERROR_OVERLAP;
  if (n == 0) {
    // frozen statistics (training needs values): no data, so the sums are
    // 0; and no plan, whose products of outer and inner could overflow
    // when channels == 0
    zero_channel_outputs(dtype, channels, dweight, dbias);
    return BNORM_OK;
  }
  return run_kernel(BNORM_OP_BACKWARD, dtype, outer, channels, inner, workspace,
                    workspace_bytes, [&](auto& a) {
    set(a.dy, dy), set(a.x, x), set(a.y, y), set(a.out, dx), set(a.dresidual, dresidual);
    set(a.mean, mean), set(a.invstd, invstd), set(a.weight, weight), set(a.bias, bias);
    set(a.dweight, dweight), set(a.dbias, dbias);
    a.frozen = frozen;
    set_activation(a, flags);
  });
}

BNORM_API bnorm_status bnorm_backward_from_output(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* y, const void* residual, const void* invstd,
    const void* weight, const void* bias, void* dx, void* dresidual, void* dweight,
    void* dbias, int32_t activation, double param, uint32_t flags) {
  return bnorm_backward_from_output_ws(dtype, outer, channels, inner, dy, y, residual, invstd,
                                       weight, bias, dx, dresidual, dweight, dbias, activation,
                                       param, flags, nullptr, 0);
}

BNORM_API bnorm_status bnorm_backward_from_output_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void* dy, const void* y, const void* residual, const void* invstd,
    const void* weight, const void* bias, void* dx, void* dresidual, void* dweight,
    void* dbias, int32_t activation, double param, uint32_t flags, void* workspace, size_t workspace_bytes) {
  int64_t es, n;
  const bnorm_status st = check_tensor(dtype, outer, channels, inner, false, &es, &n);
  if (st != BNORM_OK) return st;
  if (!dy || !y || !invstd) return BNORM_ERROR_NULL_POINTER;
  if ((flags & ~uint32_t(BNORM_FLAG_FROZEN_STATS)) != 0) return BNORM_ERROR_INVALID_FLAGS;
  const bool frozen = (flags & BNORM_FLAG_FROZEN_STATS) != 0;
  if (activation != BNORM_ACT_IDENTITY && activation != BNORM_ACT_LEAKY_RELU &&
      activation != BNORM_ACT_ELU)
    return BNORM_ERROR_INVALID_ARGUMENT;
  if (activation != BNORM_ACT_IDENTITY && !(std::isfinite(param) && param > 0))
    return BNORM_ERROR_INVALID_ARGUMENT;
  if (!frozen && (channels == 0 || outer * inner <= 1)) return BNORM_ERROR_TOO_FEW_VALUES;
  const int64_t data = n * es, par = channels * param_size_of(dtype);
  if (dresidual && !residual) return BNORM_ERROR_INVALID_ARGUMENT;
  // dx and dresidual may each be exactly dy, y or residual
  const Span outs[] = {{dx, data}, {dresidual, data}, {dweight, par}, {dbias, par},
                       workspace_span(workspace, workspace_bytes)};
  const Span ins[] = {{dy, data}, {y, data}, {residual, data}, {invstd, par}, {weight, par},
                      {bias, par}};
  if (any_forbidden_overlap_data(outs, 5, 2, ins, 6, 3)) return BNORM_ERROR_OVERLAP;
  if (weight) {
    bool ok = true;
    with_type(dtype, [&](auto t) {
      using P = Param<decltype(t)>;
      const P* w = static_cast<const P*>(weight);
      for (int64_t c = 0; c < channels; ++c)
        ok = ok && std::isfinite(static_cast<double>(w[c])) && w[c] != P(0);
    });
    if (!ok) return BNORM_ERROR_INVALID_ARGUMENT;
  }
  if (n == 0) {  // frozen statistics and no data: the sums are 0
    zero_channel_outputs(dtype, channels, dweight, dbias);
    return BNORM_OK;
  }
  return run_kernel(BNORM_OP_BACKWARD_FROM_OUTPUT, dtype, outer, channels, inner, workspace,
                    workspace_bytes, [&](auto& a) {
    set(a.dy, dy), set(a.y, y), set(a.residual, residual), set(a.out, dx);
    set(a.dresidual, dresidual), set(a.invstd, invstd);
    set(a.weight, weight), set(a.bias, bias), set(a.dweight, dweight), set(a.dbias, dbias);
    a.frozen = frozen, a.act = activation, a.act_param = param;
  });
}

BNORM_API bnorm_status bnorm_workspace_size(int32_t op, bnorm_dtype dtype, int64_t outer,
                                            int64_t channels, int64_t inner,
                                            int32_t threads, size_t* bytes) {
  int64_t es, n;
  const bnorm_status st = check_tensor(dtype, outer, channels, inner, false, &es, &n);
  if (st != BNORM_OK) return st;
  if (!bytes) return BNORM_ERROR_NULL_POINTER;
  if (!valid_op(op)) return BNORM_ERROR_INVALID_ARGUMENT;
  if (channels == 0) {  // nothing per channel (and no plan: see bnorm_backward_ws)
    *bytes = 0;
    return BNORM_OK;
  }
  const int nt = n < kParallelMinElements ? 1 : (threads > 0 ? threads : num_threads());
  const Plan plan(outer, channels, inner, es);
  const WorkSizes w = work_sizes(op, plan, nt, param_size_of(dtype));
  if (!w.fits()) return BNORM_ERROR_INVALID_SIZE;
  *bytes = static_cast<size_t>(w.total());
  return BNORM_OK;
}

}  // extern "C"
