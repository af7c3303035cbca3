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

#include "bnorm/bnorm.h"

#include "kernels.hpp"
#include "plan.hpp"
#include "threading.hpp"

namespace bnorm {

constexpr int64_t kWorkAlign = 64;  // each piece starts on a cache line

inline int64_t round_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

struct WorkSizes {
  int64_t partials = 0, scratch = 0, coef = 0;  // bytes
  // Bytes to ask of the caller: the pieces, each rounded to a cache line,
  // and the slack to align the first one in a block of any alignment.
  int64_t total() const {
    const int64_t sum = round_up(partials, kWorkAlign) + round_up(scratch, kWorkAlign) +
                        round_up(coef, kWorkAlign);
    return sum == 0 ? 0 : sum + kWorkAlign;
  }
};

// The pieces op (a BNORM_OP_* code, known to be valid) needs on nt threads;
// param_size: bytes of one parameter (Param<T>).
inline WorkSizes work_sizes(int op, const Plan& p, int nt, int64_t param_size) {
  WorkSizes w;
  const int64_t C = p.channels;
  const int64_t scratch = p.rows ? nt * scratch_stride(3 * C) * int64_t(sizeof(double)) : 0;
  switch (op) {
    case BNORM_OP_FORWARD_TRAINING:
      w.partials = p.groups * C * int64_t(sizeof(Moments));
      w.scratch = scratch;
      w.coef = 3 * C * param_size;  // mean, scale, shift
      break;
    case BNORM_OP_BACKWARD:
      w.partials = p.groups * C * int64_t(sizeof(Sums));
      w.scratch = scratch;
      w.coef = 7 * C * param_size;  // k, r, mean, q; the forward's m, s, b
      break;
    case BNORM_OP_MOMENTS:
      w.partials = p.groups * C * int64_t(sizeof(Moments));
      w.scratch = scratch;
      break;
    case BNORM_OP_BACKWARD_REDUCE:
      w.partials = p.groups * C * int64_t(sizeof(Sums));
      w.scratch = scratch;
      break;
    case BNORM_OP_FORWARD_NORMALIZE: w.coef = 3 * C * param_size; break;
    case BNORM_OP_BACKWARD_APPLY: w.coef = 4 * C * param_size; break;
    case BNORM_OP_BACKWARD_FROM_OUTPUT:
      w.partials = p.groups * C * int64_t(sizeof(Sums));
      w.coef = 5 * C * param_size;  // k, r, q, 1 / gamma, beta
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
