// Thread count and the one parallel-for every kernel uses.
//
// Work is always cut into tasks by the shape alone; threads only decide who
// runs which task. That is what keeps results bitwise independent of the
// thread count.
#pragma once

#include <cstdint>

namespace bnorm {

// Threads a call may use (>= 1).
int num_threads();

// Below this many elements a call runs on the calling thread: starting an
// OpenMP team costs more than the work.
constexpr int64_t kParallelMinElements = int64_t(1) << 15;

template <class F>
void parallel_for(int64_t n_tasks, int64_t total_elements, const F& task) {
#ifdef BNORM_HAVE_OPENMP
  int64_t nt = num_threads();
  if (nt > n_tasks) nt = n_tasks;
  if (nt > 1 && total_elements >= kParallelMinElements) {
#pragma omp parallel for num_threads(static_cast<int>(nt)) schedule(static)
    for (int64_t i = 0; i < n_tasks; ++i) task(i);
    return;
  }
#else
  (void)total_elements;
#endif
  for (int64_t i = 0; i < n_tasks; ++i) task(i);
}

}  // namespace bnorm
