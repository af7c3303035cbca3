// Thread count, and the parallel region every kernel runs in.
//
// Work is cut into pieces by the shape alone (plan.hpp); threads only decide
// who computes which piece. That keeps results bitwise independent of the
// thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>

#include "bnorm/bnorm.h"

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

// The host's parallel-for (bnorm_set_parallel_for), or fn == nullptr.
struct HostPool {
  bnorm_parallel_for_fn fn = nullptr;
  void* context = nullptr;
  int threads = 1;
};
// A consistent copy of the current setting.
HostPool host_pool();

// In a process made by fork() from one that may have run OpenMP teams (its
// own or another library's: they share the runtime), GNU OpenMP's thread
// pool is gone but the runtime still waits for it, and the first parallel
// region hangs. Such a child runs bnorm's parallel work on a pool of
// bnorm's own instead (started on first use, in each forked generation);
// the work is cut the same way, so the bits are the same. Returns that pool
// as a HostPool of `threads` parts, or fn == nullptr outside a forked child.
HostPool fork_pool(int threads);

namespace detail {
template <class F, class... Rest>
void run_phases(int tid, int n, const F& first, const Rest&... rest) {
  first(tid, n);
  if constexpr (sizeof...(Rest) > 0) {
#ifdef BNORM_HAVE_OPENMP
#pragma omp barrier
#endif
    run_phases(tid, n, rest...);
  }
}

// One phase as n tasks of the host's parallel-for. A task that throws
// (nothing in the kernels should) is recorded, not let through the host.
template <class F>
void host_phase(const HostPool& pool, int n, const F& phase) {
  struct Ctx {
    const F* phase;
    int n;
    std::atomic<bool> failed;
  } ctx{&phase, n, {false}};
  auto task = [](void* c, int64_t i) {
    auto* t = static_cast<Ctx*>(c);
    try {
      if (i >= 0 && i < t->n) (*t->phase)(static_cast<int>(i), t->n);
    } catch (...) {
      t->failed.store(true);
    }
  };
  pool.fn(pool.context, n, task, &ctx);
  if (ctx.failed.load()) throw std::runtime_error("bnorm: a parallel task failed");
}
}  // namespace detail

// Runs phase(tid, nthreads) for tid in [0, nthreads) for each phase in turn:
// every part of a phase finishes before any part of the next starts. With
// OpenMP the phases share one team separated by barriers (no extra start-up);
// with a host parallel-for each phase is one call of it, so no task ever
// waits for another (the host may run them in any order, even serially).
template <class... Phases>
void parallel(int nt, const Phases&... phases) {
  if (nt > 1) {
    HostPool pool = host_pool();
#ifdef BNORM_HAVE_OPENMP
    if (!pool.fn) pool = fork_pool(nt);
#endif
    if (pool.fn) {
      (detail::host_phase(pool, nt, phases), ...);
      return;
    }
#ifdef BNORM_HAVE_OPENMP
#pragma omp parallel num_threads(nt)
    detail::run_phases(omp_get_thread_num(), omp_get_num_threads(), phases...);
    return;
#endif
  }
  detail::run_phases(0, 1, phases...);
}

// Doubles between two threads' scratch areas of n doubles: whole cache
// lines apart, so that no line is shared (false sharing costs a line
// transfer per update).
inline int64_t scratch_stride(int64_t n) { return (n + 7) / 8 * 8 + 8; }

// Hands out the task indices [0, n) one at a time, to whichever thread asks
// next. For the reduction phases, whose tasks write separate partials that
// are combined in a fixed order afterwards, so who takes which task changes
// no result. Equal shares of tasks were not equal shares of time: measured
// on 2 threads, one thread's half of the rows took twice as long as the
// other's (64x7x7x2048 NHWC), and the faster one then waited.
class Dealer {
 public:
  explicit Dealer(int64_t n) : n_(n) {}
  Dealer(const Dealer&) = delete;
  Dealer& operator=(const Dealer&) = delete;
  // The next task in *i; false when none is left.
  bool take(int64_t* i) {
    *i = next_.fetch_add(1, std::memory_order_relaxed);
    return *i < n_;
  }

 private:
  std::atomic<int64_t> next_{0};
  const int64_t n_;
};

// The tid-th of nt contiguous, nearly equal parts of [0, n).
inline void share(int64_t n, int tid, int nt, int64_t* begin, int64_t* end) {
  const int64_t q = n / nt, r = n % nt;
  *begin = tid * q + std::min<int64_t>(tid, r);
  *end = *begin + q + (tid < r ? 1 : 0);
}

}  // namespace bnorm
