#include "threading.hpp"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <string>

#include "bnorm/bnorm.h"

namespace bnorm {
namespace {
// 0 means "the default": OpenMP's team size, read at call time.
std::atomic<int> g_requested_threads{0};

int64_t read_l2_bytes() {
  // sysfs first (what the kernel reports for this CPU), then sysconf.
  for (int index = 0; index < 8; ++index) {
    const std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level(dir + "level"), size(dir + "size");
    int lv = 0;
    std::string s;
    if (!(level >> lv) || !(size >> s)) continue;
    if (lv != 2 || s.empty()) continue;
    int64_t v = std::stoll(s);
    const char unit = s.back();
    if (unit == 'K') v *= 1024;
    if (unit == 'M') v *= 1024 * 1024;
    if (v > 0) return v;
  }
#ifdef _SC_LEVEL2_CACHE_SIZE
  const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (v > 0) return v;
#endif
  return 512 * 1024;  // a conservative guess
}
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

int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
    try {
      int64_t v = read_l2_bytes();
      return std::min<int64_t>(std::max<int64_t>(v, 128 * 1024), 64 << 20);
    } catch (...) {
      return int64_t(512 * 1024);
    }
  }();
  return bytes;
}

}  // namespace bnorm

extern "C" {

BNORM_API void bnorm_set_num_threads(int n) {
  bnorm::g_requested_threads.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

BNORM_API int bnorm_get_num_threads(void) { return bnorm::num_threads(); }

}  // extern "C"
