#include "threading.hpp"

#include <atomic>

#include "bnorm/bnorm.h"

#ifdef BNORM_HAVE_OPENMP
#include <omp.h>
#endif

namespace bnorm {
namespace {
// 0 means "the default": OpenMP's team size, read at call time.
std::atomic<int> g_requested_threads{0};
}  // namespace

int num_threads() {
#ifdef BNORM_HAVE_OPENMP
  int n = g_requested_threads.load(std::memory_order_relaxed);
  if (n <= 0) n = omp_get_max_threads();
  return n < 1 ? 1 : n;
#else
  return 1;
#endif
}

}  // namespace bnorm

extern "C" {

BNORM_API void bnorm_set_num_threads(int n) {
  bnorm::g_requested_threads.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

BNORM_API int bnorm_get_num_threads(void) { return bnorm::num_threads(); }

}  // extern "C"
