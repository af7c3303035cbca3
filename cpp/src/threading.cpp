#include "threading.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <string>

#include "bnorm/bnorm.h"

namespace bnorm {
namespace {
// 0 means "the default": OpenMP's team size, read at call time.
std::atomic<int> g_requested_threads{0};

// The host's parallel-for. A mutex (not atomics) so that a call always sees
// a function, its context and its thread count that were set together.
std::mutex g_pool_mutex;
HostPool g_pool;

int64_t read_cache_bytes(int want_level, int64_t fallback) {
  // sysfs first (what the kernel reports for this CPU), then sysconf.
  for (int index = 0; index < 8; ++index) {
    const std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level(dir + "level"), size(dir + "size");
    int lv = 0;
    std::string s;
    if (!(level >> lv) || !(size >> s)) continue;
    if (lv != want_level || s.empty()) continue;
    int64_t v = std::stoll(s);
    const char unit = s.back();
    if (unit == 'K') v *= 1024;
    if (unit == 'M') v *= 1024 * 1024;
    if (v > 0) return v;
  }
#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  const long v = sysconf(want_level == 2 ? _SC_LEVEL2_CACHE_SIZE
                                          : _SC_LEVEL3_CACHE_SIZE);
  if (v > 0) return v;
#endif
  return fallback;
}

int64_t cache_bytes(int level, int64_t fallback, int64_t lo, int64_t hi) {
  try {
    return std::min(std::max(read_cache_bytes(level, fallback), lo), hi);
  } catch (...) {
    return fallback;
  }
}
}  // namespace

HostPool host_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  return g_pool;
}

int num_threads() {
  const HostPool pool = host_pool();
  if (pool.fn) return pool.threads;
#ifdef BNORM_HAVE_OPENMP
  int n = g_requested_threads.load(std::memory_order_relaxed);
  if (n <= 0) n = omp_get_max_threads();
  return n < 1 ? 1 : n;
#else
  return 1;
#endif
}

int64_t l2_cache_bytes() {
  static const int64_t bytes = cache_bytes(2, 512 << 10, 128 << 10, 64 << 20);
  return bytes;
}

int64_t l3_cache_bytes() {
  static const int64_t bytes = cache_bytes(3, 8 << 20, 1 << 20, int64_t(1) << 30);
  return bytes;
}

}  // namespace bnorm

extern "C" {

BNORM_API void bnorm_set_num_threads(int n) {
  bnorm::g_requested_threads.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

BNORM_API int bnorm_get_num_threads(void) { return bnorm::num_threads(); }

BNORM_API const char* bnorm_threading_backend(void) {
  if (bnorm::host_pool().fn) return "host";
#ifdef BNORM_HAVE_OPENMP
  return "openmp";
#else
  return "none";
#endif
}

BNORM_API bnorm_status bnorm_set_parallel_for(bnorm_parallel_for_fn parallel_for,
                                              void* pool_context, int max_threads) {
  bnorm::HostPool pool;
  if (parallel_for) {
    if (max_threads < 1) return BNORM_ERROR_INVALID_ARGUMENT;
    pool.fn = parallel_for;
    pool.context = pool_context;
    pool.threads = max_threads;
  }
  std::lock_guard<std::mutex> lock(bnorm::g_pool_mutex);
  bnorm::g_pool = pool;
  return BNORM_OK;
}

}  // extern "C"
