// Argument checks shared by the C API entry points. Every check runs
// before any write into a caller's buffer.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <new>

#include "bnorm/bnorm.h"

namespace bnorm {

// Elements of the tensor, or -1 for a negative size or an overflow (of
// int64 or of the address space once multiplied by the element size). The
// per-channel arrays must fit too (`channels` doubles), even when the tensor
// is empty: every `channels * size` product of the callers is then safe.
inline int64_t checked_elements(int64_t outer, int64_t channels, int64_t inner,
                         int64_t elem_size) {
  if (outer < 0 || channels < 0 || inner < 0) return -1;
  if (channels > std::numeric_limits<intptr_t>::max() / 8) return -1;
  const int64_t limit = std::numeric_limits<int64_t>::max() / elem_size;
  int64_t n = outer;
  for (int64_t f : {channels, inner}) {
    if (f != 0 && n > limit / f) return -1;
    n *= f;
  }
  if (static_cast<uint64_t>(n * elem_size) >
      static_cast<uint64_t>(std::numeric_limits<intptr_t>::max()))
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

// Each output must not overlap any other buffer in the list, except that an
// output may be exactly one of the inputs named in `alias_ok` (in place).
inline bool any_forbidden_overlap(const Span* outs, int n_out, const Span* ins,
                           int n_in, const void* alias_ok0,
                           const void* alias_ok1, int aliasing_out) {
  for (int i = 0; i < n_out; ++i) {
    for (int j = i + 1; j < n_out; ++j)
      if (overlap(outs[i], outs[j])) return true;
    for (int j = 0; j < n_in; ++j) {
      if (!overlap(outs[i], ins[j])) continue;
      const bool exact = outs[i].p == ins[j].p && outs[i].bytes == ins[j].bytes;
      const bool allowed = i == aliasing_out && exact &&
                           (ins[j].p == alias_ok0 || ins[j].p == alias_ok1);
      if (!allowed) return true;
    }
  }
  return false;
}

// Each output must not overlap another output, and may overlap an input
// only by being exactly that input (for per-channel maps that read all of
// channel c's inputs before writing its outputs).
inline bool any_forbidden_overlap_exact_ok(const Span* outs, int n_out,
                                           const Span* ins, int n_in) {
  for (int i = 0; i < n_out; ++i) {
    for (int j = i + 1; j < n_out; ++j)
      if (overlap(outs[i], outs[j])) return true;
    for (int j = 0; j < n_in; ++j)
      if (overlap(outs[i], ins[j]) &&
          !(outs[i].p == ins[j].p && outs[i].bytes == ins[j].bytes))
        return true;
  }
  return false;
}

// Outputs must not overlap one another; the first n_data_out outputs (data
// tensors) may be exactly one of the first n_data_in inputs (in place);
// every other overlap with an input is refused.
inline bool any_forbidden_overlap_data(const Span* outs, int n_out, int n_data_out,
                                       const Span* ins, int n_in, int n_data_in) {
  for (int i = 0; i < n_out; ++i) {
    for (int j = i + 1; j < n_out; ++j)
      if (overlap(outs[i], outs[j])) return true;
    for (int j = 0; j < n_in; ++j) {
      if (!overlap(outs[i], ins[j])) continue;
      const bool exact = outs[i].p == ins[j].p && outs[i].bytes == ins[j].bytes;
      if (!(exact && i < n_data_out && j < n_data_in)) return true;
    }
  }
  return false;
}

inline bool valid_eps(double eps) { return std::isfinite(eps) && eps > 0; }
inline bool valid_momentum(double m) { return m >= 0.0 && m <= 1.0; }  // NaN fails

template <class F>
bnorm_status guarded(F&& f) {
  try {
    f();
    return BNORM_OK;
  } catch (const std::bad_alloc&) {
    return BNORM_ERROR_OUT_OF_MEMORY;
  } catch (...) {
    return BNORM_ERROR_INTERNAL;
  }
}

}  // namespace bnorm
