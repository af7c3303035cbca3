// What the C API entry points share: the argument checks (every check runs
// before any write into a caller's buffer), and run_kernel, which gives a
// kernel its workspace and keeps exceptions inside the library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>

#include "bnorm/bnorm.h"

#include "kernels.hpp"
#include "threading.hpp"
#include "workspace.hpp"

namespace bnorm {

// Elements of the tensor, or -1 for a negative size or an overflow (of
// int64 or of the address space once multiplied by the element size). The
// per-channel arrays must fit too (`channels` doubles), even when the tensor
// is empty: every `channels * size` product of the callers is then safe.
inline int64_t checked_elements(int64_t outer, int64_t channels, int64_t inner,
                                int64_t elem_size) {
  if (outer < 0 || channels < 0 || inner < 0) return -1;
  if (channels > std::numeric_limits<intptr_t>::max() / 8) return -1;
  // (overflow tests by multiplication: a small call pays no division)
  int64_t n, bytes;
  if (__builtin_mul_overflow(outer, channels, &n) || __builtin_mul_overflow(n, inner, &n) ||
      __builtin_mul_overflow(n, elem_size, &bytes) ||
      static_cast<uint64_t>(bytes) > static_cast<uint64_t>(std::numeric_limits<intptr_t>::max()))
    return -1;
  return n;
}

// Bytes of one data element (0: not a supported dtype).
inline int64_t elem_size_of(bnorm_dtype dtype) {
  switch (dtype) {
    case BNORM_FLOAT32: return 4;
    case BNORM_FLOAT64: return 8;
    case BNORM_FLOAT16:
    case BNORM_BFLOAT16: return 2;
    default: return 0;
  }
}

// Bytes of one parameter or statistic: double for float64 data, else float.
inline int64_t param_size_of(bnorm_dtype dtype) { return dtype == BNORM_FLOAT64 ? 8 : 4; }

struct Span {
  const void* p;
  int64_t bytes;
};

inline bool overlap(Span a, Span b) {
  if (!a.p || !b.p || a.bytes <= 0 || b.bytes <= 0) return false;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a.p);
  const uintptr_t b0 = reinterpret_cast<uintptr_t>(b.p);
  return a0 < b0 + static_cast<uintptr_t>(b.bytes) &&
         b0 < a0 + static_cast<uintptr_t>(a.bytes);
}

// Whether some output overlaps another output, or an input other than by
// being exactly that input (same start, same size) where allowed(i, j)
// lets output i be input j (in place).
template <class Allowed>
inline bool forbidden_overlap(const Span* outs, int n_out, const Span* ins, int n_in,
                              const Allowed& allowed) {
  for (int i = 0; i < n_out; ++i) {
    for (int j = i + 1; j < n_out; ++j)
      if (overlap(outs[i], outs[j])) return true;
    for (int j = 0; j < n_in; ++j) {
      if (!overlap(outs[i], ins[j])) continue;
      const bool exact = outs[i].p == ins[j].p && outs[i].bytes == ins[j].bytes;
      if (!(exact && allowed(i, j))) return true;
    }
  }
  return false;
}

// Output `aliasing_out` may be exactly alias_ok0 or alias_ok1; nothing else.
inline bool any_forbidden_overlap(const Span* outs, int n_out, const Span* ins,
                                  int n_in, const void* alias_ok0,
                                  const void* alias_ok1, int aliasing_out) {
  return forbidden_overlap(outs, n_out, ins, n_in, [&](int i, int j) {
    return i == aliasing_out && (ins[j].p == alias_ok0 || ins[j].p == alias_ok1);
  });
}

// Any output may be exactly any input (per-channel maps that read all of
// channel c's inputs before writing its outputs).
inline bool any_forbidden_overlap_exact_ok(const Span* outs, int n_out,
                                           const Span* ins, int n_in) {
  return forbidden_overlap(outs, n_out, ins, n_in, [](int, int) { return true; });
}

// The first n_data_out outputs (data tensors) may be exactly one of the
// first n_data_in inputs.
inline bool any_forbidden_overlap_data(const Span* outs, int n_out, int n_data_out,
                                       const Span* ins, int n_in, int n_data_in) {
  return forbidden_overlap(outs, n_out, ins, n_in, [&](int i, int j) {
    return i < n_data_out && j < n_data_in;
  });
}

// The span of a caller's workspace (none when ws is null), listed with the
// outputs: it may overlap no other buffer.
inline Span workspace_span(const void* ws, size_t bytes) {
  return {ws, ws ? static_cast<int64_t>(std::min<uint64_t>(bytes, INT64_MAX)) : 0};
}

inline bool valid_eps(double eps) { return std::isfinite(eps) && eps > 0; }
inline bool valid_momentum(double m) { return m >= 0.0 && m <= 1.0; }  // NaN fails

// f(), with a status for what it throws; f returns void (OK) or a status.
template <class F>
bnorm_status guarded(F&& f) {
  try {
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      return BNORM_OK;
    } else {
      return f();
    }
  } catch (const std::bad_alloc&) {
    return BNORM_ERROR_OUT_OF_MEMORY;
  } catch (...) {
    return BNORM_ERROR_INTERNAL;
  }
}

// Whether op is one of the BNORM_OP_* codes.
inline bool valid_op(int op) {
  return op >= BNORM_OP_FORWARD_TRAINING && op <= BNORM_OP_BACKWARD_FROM_OUTPUT;
}

// The checks every op on a tensor starts with: the dtype, then the sizes
// (with per-channel doubles too if `doubles`). *es and *n: element size and
// count.
inline bnorm_status check_tensor(bnorm_dtype dtype, int64_t outer, int64_t channels,
                                 int64_t inner, bool doubles, int64_t* es, int64_t* n) {
  *es = elem_size_of(dtype);
  if (*es == 0) return BNORM_ERROR_UNSUPPORTED_DTYPE;
  *n = checked_elements(outer, channels, inner, *es);
  if (*n < 0 || (doubles && checked_elements(1, channels, 2, 8) < 0))
    return BNORM_ERROR_INVALID_SIZE;
  return BNORM_OK;
}

// The activation flags of the _fused entry points: at most one of them.
constexpr uint32_t kActivationFlags = BNORM_FLAG_RELU | BNORM_FLAG_RELU6;
inline bool valid_activation(uint32_t flags) {
  return (flags & kActivationFlags) != kActivationFlags;
}
template <class CallT>
inline void set_activation(CallT& a, uint32_t flags) {
  a.fused_act = (flags & BNORM_FLAG_RELU6) ? kActRelu6
                : (flags & BNORM_FLAG_RELU) ? kActRelu : kActNone;
}

// The checks of the training forward's scalars and running statistics, in
// the order the header lists the errors: flags (`known` bits), eps, the
// running pair, momentum.
inline bnorm_status check_training(uint32_t flags, uint32_t known, double eps,
                                   const void* running_mean, const void* running_var,
                                   double momentum) {
  if ((flags & ~known) != 0) return BNORM_ERROR_INVALID_FLAGS;
  if (!valid_eps(eps)) return BNORM_ERROR_INVALID_EPS;
  if ((running_mean == nullptr) != (running_var == nullptr))
    return BNORM_ERROR_INVALID_ARGUMENT;
  if (running_mean && !valid_momentum(momentum)) return BNORM_ERROR_INVALID_MOMENTUM;
  return BNORM_OK;
}

// The gradients of weight and bias of a backward over no values: 0 (each
// output may be null).
inline void zero_channel_outputs(bnorm_dtype dtype, int64_t channels, void* dweight,
                                 void* dbias) {
  with_type(dtype, [&](auto t) {
    using P = Param<decltype(t)>;
    for (int64_t c = 0; c < channels; ++c) {
      if (dweight) static_cast<P*>(dweight)[c] = P(0);
      if (dbias) static_cast<P*>(dbias)[c] = P(0);
    }
  });
}

// d = s, a caller's untyped pointer as the pointer type of d's field.
template <class D, class S>
inline void set(D*& d, S* s) {
  d = static_cast<D*>(s);
}

// The kernel of op in the table of type T.
template <class T>
auto kernel_for(int op) {
  const Kernels<T>& k = kernels<T>();
  switch (op) {
    case BNORM_OP_FORWARD_TRAINING: return k.forward_training;
    case BNORM_OP_BACKWARD: return k.backward;
    case BNORM_OP_MOMENTS: return k.moments;
    case BNORM_OP_FORWARD_NORMALIZE: return k.forward_apply;
    case BNORM_OP_BACKWARD_REDUCE: return k.backward_sums;
    case BNORM_OP_BACKWARD_APPLY: return k.backward_apply;
    case BNORM_OP_BACKWARD_FROM_OUTPUT: return k.backward_from_output;
    default: return k.forward_inference;
  }
}

// Runs op on data of `dtype` (all arguments checked) with the Call<T> that
// fill(call) sets from the caller's arguments. The workspace is the
// caller's [ws, ws + ws_bytes) or, with ws null, one block allocated here
// before anything is written; a caller's block too small for the call's
// thread count is refused.
template <class Fill>
bnorm_status run_kernel(int op, bnorm_dtype dtype, int64_t outer, int64_t channels,
                        int64_t inner, void* ws, size_t ws_bytes, const Fill& fill) {
  return guarded([&]() -> bnorm_status {
    // (inference reads only the shape of the plan, never its schedule)
    const Plan plan(outer, channels, inner, elem_size_of(dtype),
                    op != BNORM_OP_FORWARD_INFERENCE);
    const int nt = threads_for(outer * channels * inner);
    const WorkSizes sizes = work_sizes(op, plan, nt, param_size_of(dtype));
    if (!sizes.fits()) return BNORM_ERROR_INVALID_SIZE;
    std::unique_ptr<char[]> own;
    if (!ws) {
      if (sizes.total() > 0) own.reset(new char[static_cast<size_t>(sizes.total())]);
      ws = own.get();
    } else if (ws_bytes < static_cast<uint64_t>(sizes.total())) {
      return BNORM_ERROR_WORKSPACE_TOO_SMALL;
    }
    const Work work = carve(ws, sizes, nt);
    with_type(dtype, [&](auto t) {
      using T = decltype(t);
      Call<T> call;
      fill(call);
      kernel_for<T>(op)(plan, call, work);
    });
    return BNORM_OK;
  });
}

}  // namespace bnorm
