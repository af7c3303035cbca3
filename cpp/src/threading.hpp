// Thread count, and the parallel region every kernel runs in.
//
// Work is cut into pieces by the shape alone (plan.hpp); threads only decide
// who computes which piece. That keeps results bitwise independent of the
// thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef BNORM_HAVE_OPENMP
#include <omp.h>
#endif

namespace bnorm {

// Threads a call may use (>= 1).
int num_threads();

// Per-core cache the blocked kernels aim to stay inside, in bytes.
int64_t l2_cache_bytes();
// Shared last-level cache, in bytes.
int64_t l3_cache_bytes();

// Below this many elements a call runs on the calling thread: starting a
// team costs more than the work.
constexpr int64_t kParallelMinElements = int64_t(1) << 15;

// Threads to use for a call touching `elements` values.
inline int threads_for(int64_t elements) {
  return elements < kParallelMinElements ? 1 : num_threads();
}

// Runs body(tid, nthreads) on a team of up to nt threads (one region, so
// phases separated by barrier() cost no extra thread start-up).
template <class F>
void parallel(int nt, const F& body) {
#ifdef BNORM_HAVE_OPENMP
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    body(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  body(0, 1);
}

// All threads of the current parallel() team wait here.
inline void barrier() {
#ifdef BNORM_HAVE_OPENMP
#pragma omp barrier
#endif
}

// Doubles between two threads' scratch areas of n doubles: whole cache
// lines apart, so that no line is shared (false sharing costs a line
// transfer per update).
inline int64_t scratch_stride(int64_t n) { return (n + 7) / 8 * 8 + 8; }

// The tid-th of nt contiguous, nearly equal parts of [0, n).
inline void share(int64_t n, int tid, int nt, int64_t* begin, int64_t* end) {
  const int64_t q = n / nt, r = n % nt;
  *begin = tid * q + std::min<int64_t>(tid, r);
  *end = *begin + q + (tid < r ? 1 : 0);
}

}  // namespace bnorm
