// The kernel table: every op the C API runs, declared once.
//
// BNORM_KERNELS lists the ops; each has the one signature
//   void op(const Plan&, const Call<T>&, const Work&)
// so the per-ISA declarations (below), the table of function pointers
// (Kernels<T>), the run-time choice (dispatch.cpp) and the instantiations
// (forward.cpp, backward.cpp) all follow from the list. Each kernel source
// is compiled once per instruction set into namespace bnorm::<isa>
// (simd.hpp). Arguments are already validated by the C API and the
// workspace is carved (workspace.hpp): a kernel allocates nothing and fails
// in no way.
#pragma once

#include <cstdint>

#include "bnorm/bnorm.h"

#include "half.hpp"
#include "plan.hpp"

#define BNORM_KERNELS(X) \
  X(forward_training)    \
  X(forward_inference)   \
  X(backward)            \
  X(moments)             \
  X(forward_apply)       \
  X(backward_sums)       \
  X(backward_apply)      \
  X(backward_from_output)

namespace bnorm {

// The activation of the _fused entry points (BNORM_FLAG_RELU, _RELU6), as
// the forward's formula and the backward's mask take it.
enum FusedAct { kActNone = 0, kActRelu = 1, kActRelu6 = 2 };

// The arguments of one call. Data of type T (float, double, Half,
// BFloat16), in the layout [outer, channels, inner] of the Plan;
// parameters, statistics and arithmetic of type P = Param<T> (float for the
// half types). An op reads the fields it documents in bnorm.h and ignores
// the others (null or 0).
template <class T, class P>
struct CallOf {
  // tensors
  const T* x = nullptr;
  const T* residual = nullptr;  // fused forward: y = act?(BN(x) + residual)
  const T* dy = nullptr;
  const T* y = nullptr;         // fused backward: the forward's output (mask)
  T* out = nullptr;             // y (forward) or dx (backward)
  T* dresidual = nullptr;       // fused backward: the residual's gradient
  // per-channel inputs
  const P* weight = nullptr;
  const P* bias = nullptr;
  const P* mean = nullptr;      // inference: running mean; backward: saved
  const P* var = nullptr;       // inference: running variance
  const P* invstd = nullptr;    // backward: saved 1 / sqrt(var + eps)
  // per-channel outputs
  P* save_mean = nullptr;
  P* save_invstd = nullptr;
  P* running_mean = nullptr;    // updated in place, with running_var
  P* running_var = nullptr;
  P* dweight = nullptr;
  P* dbias = nullptr;
  // the split phases (statistics across processes), in double
  const double* in_mean = nullptr;  // forward_apply: the global moments
  const double* in_m2 = nullptr;
  const double* in_sum_dy = nullptr;  // backward_apply: the global sums
  const double* in_sum_dy_xmu = nullptr;
  double* out_mean = nullptr;  // moments
  double* out_m2 = nullptr;
  double* out_sum_dy = nullptr;  // backward_sums
  double* out_sum_dy_xmu = nullptr;
  double count = 0;  // forward_apply, backward_apply: values per channel
  double eps = 0, momentum = 0;
  bool unbiased = true;  // running variance with Bessel's correction
  int fused_act = kActNone;  // the fused activation (FusedAct)
  bool frozen = false;   // backward through fixed statistics
  int act = 0;           // backward_from_output: BNORM_ACT_*, and its parameter
  double act_param = 0;
};
template <class T>
using Call = CallOf<T, Param<T>>;

// A call's workspace, carved from one caller-owned or library-owned block
// (workspace.hpp): the reduction's partial results, the rows reducers'
// per-thread scratch, and the per-channel coefficients of the elementwise
// pass. `threads`: the thread count the scratch was sized for and the call
// runs on.
struct Work {
  void* partials = nullptr;
  double* scratch = nullptr;
  void* coef = nullptr;
  int threads = 1;
};

#define BNORM_DECLARE_KERNEL(name) \
  template <class T>               \
  void name(const Plan&, const Call<T>&, const Work&);
#define BNORM_DECLARE_KERNELS(ns) \
  namespace ns {                  \
  BNORM_KERNELS(BNORM_DECLARE_KERNEL) \
  }

#ifdef BNORM_ISA_NS
BNORM_DECLARE_KERNELS(BNORM_ISA_NS)
#endif

template <class T>
struct Kernels {
#define BNORM_KERNEL_POINTER(name) void (*name)(const Plan&, const Call<T>&, const Work&);
  BNORM_KERNELS(BNORM_KERNEL_POINTER)
#undef BNORM_KERNEL_POINTER
};

// The kernels of the instruction set chosen for this process.
template <class T>
const Kernels<T>& kernels();

// Calls f(T()) with the data type of `dtype` (known to be valid).
template <class F>
void with_type(bnorm_dtype dtype, F&& f) {
  switch (dtype) {
    case BNORM_FLOAT32: f(float()); break;
    case BNORM_FLOAT64: f(double()); break;
    case BNORM_FLOAT16: f(Half()); break;
    default: f(BFloat16()); break;
  }
}

// Its name ("avx512", "avx2", "baseline" or "scalar").
const char* kernel_isa();

}  // namespace bnorm

// In a kernel source: the instantiations of `name` for the four data types.
#define BNORM_INSTANTIATE_KERNEL(name)                                      \
  template void name<float>(const Plan&, const Call<float>&, const Work&);  \
  template void name<double>(const Plan&, const Call<double>&, const Work&); \
  template void name<Half>(const Plan&, const Call<Half>&, const Work&);    \
  template void name<BFloat16>(const Plan&, const Call<BFloat16>&, const Work&);
