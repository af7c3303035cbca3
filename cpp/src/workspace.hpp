// The workspace of a call: how many bytes an op needs for a shape, dtype
// and thread count, and how one block of that size is cut into the pieces
// of Work (kernels.hpp). The same function sizes the block that
// bnorm_workspace_size reports, the one a caller passes to a *_ws entry
// point, and the one the other entry points allocate themselves before
// anything is written, so no call runs out of memory halfway.
//
// The sizes are upper bounds that depend on the shape and the thread count
// only, never on the cache sizes that pick a schedule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "bnorm/bnorm.h"

#include "kernels.hpp"
#include "plan.hpp"
#include "threading.hpp"

namespace bnorm {

constexpr int64_t kWorkAlign = 64;  // each piece starts on a cache line

inline int64_t round_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

struct WorkSizes {
  // Bytes, or -1 for a piece that does not fit in the address space (a
  // shape with no values can still have channels near INTPTR_MAX / 8): the
  // call is then refused with BNORM_ERROR_INVALID_SIZE before anything is
  // allocated.
  int64_t partials = 0, scratch = 0, coef = 0;
  bool fits() const { return partials >= 0 && scratch >= 0 && coef >= 0; }
  // Bytes to ask of the caller: the pieces, each rounded to a cache line,
  // and the slack to align the first one in a block of any alignment.
  // (Each piece is at most INTPTR_MAX / 4 when it fits, so the sum cannot
  // wrap.)
  int64_t total() const {
    const int64_t sum = round_up(partials, kWorkAlign) + round_up(scratch, kWorkAlign) +
                        round_up(coef, kWorkAlign);
    return sum == 0 ? 0 : sum + kWorkAlign;
  }
};

// a * b * c bytes, or -1 if that is above INTPTR_MAX / 4 (a, b, c >= 0):
// unlike checked_elements (api_common.hpp), a bound that leaves room for the
// sum of the three pieces.
inline int64_t checked_bytes(int64_t a, int64_t b, int64_t c) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) ||
      r > std::numeric_limits<intptr_t>::max() / 4)
    return -1;
  return r;
}

// The pieces op (a BNORM_OP_* code, known to be valid) needs on nt threads;
// param_size: bytes of one parameter (Param<T>). The shape passed
// check_tensor, so channels <= INTPTR_MAX / 8 and 3 * channels cannot wrap.
inline WorkSizes work_sizes(int op, const Plan& p, int nt, int64_t param_size) {
  WorkSizes w;
  const int64_t C = p.channels;
  const int64_t scratch =
      p.rows ? checked_bytes(nt, scratch_stride(3 * C), sizeof(double)) : 0;
  const int64_t moments = checked_bytes(p.groups, C, sizeof(Moments));
  const int64_t sums = checked_bytes(p.groups, C, sizeof(Sums));
  switch (op) {
    case BNORM_OP_FORWARD_TRAINING:
      w.partials = moments;
      w.scratch = scratch;
      w.coef = checked_bytes(3, C, param_size);  // mean, scale, shift
      break;
    case BNORM_OP_BACKWARD:
      w.partials = sums;
      w.scratch = scratch;
      // k, r, mean, q; the forward's m, s, b; the mask's interval lo, hi
      w.coef = checked_bytes(9, C, param_size);
      break;
    case BNORM_OP_MOMENTS:
      w.partials = moments;
      w.scratch = scratch;
      break;
    case BNORM_OP_BACKWARD_REDUCE:
      w.partials = sums;
      w.scratch = scratch;
      break;
    case BNORM_OP_FORWARD_NORMALIZE: w.coef = checked_bytes(3, C, param_size); break;
    case BNORM_OP_BACKWARD_APPLY: w.coef = checked_bytes(4, C, param_size); break;
    case BNORM_OP_BACKWARD_FROM_OUTPUT:
      w.partials = sums;
      w.coef = checked_bytes(5, C, param_size);  // k, r, q, 1 / gamma, beta
      break;
    default: break;  // BNORM_OP_FORWARD_INFERENCE: nothing
  }
  return w;
}

// The pieces of w cut from [base, base + w.total()).
inline Work carve(void* base, const WorkSizes& w, int nt) {
  Work k;
  k.threads = nt;
  if (w.total() == 0) return k;
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);
  char* at = static_cast<char*>(base) +
             (kWorkAlign - static_cast<int64_t>(b % kWorkAlign)) % kWorkAlign;
  auto take = [&](int64_t bytes) -> char* {
    char* p = bytes > 0 ? at : nullptr;
    at += round_up(bytes, kWorkAlign);
    return p;
  };
  k.partials = take(w.partials);
  k.scratch = reinterpret_cast<double*>(take(w.scratch));
  k.coef = take(w.coef);
  return k;
}

}  // namespace bnorm
