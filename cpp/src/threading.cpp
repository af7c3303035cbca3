#include "threading.hpp"

#include <unistd.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define BNORM_HAVE_ATFORK 1
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "bnorm/bnorm.h"

namespace bnorm {
namespace {
// 0 means "the default": OpenMP's team size, read at call time.
std::atomic<int> g_requested_threads{0};

// The host's parallel-for. A mutex (not atomics) so that a call always sees
// a function, its context and its thread count that were set together.
std::mutex g_pool_mutex;
HostPool g_pool;

// The pool's condition variables. On POSIX systems, pthread's own: it is
// what std::condition_variable wraps, and libstdc++ 12 gave that wrapper's
// wait a new symbol version (GLIBCXX_3.4.30), which alone would make the
// wheel need a newer C++ runtime than anything else in it (docs/wheels.md).
#ifdef BNORM_HAVE_ATFORK
class CondVar {
 public:
  CondVar() { pthread_cond_init(&c_, nullptr); }
  ~CondVar() { pthread_cond_destroy(&c_); }
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;
  template <class Done>
  void wait(std::unique_lock<std::mutex>& lock, Done done) {
    while (!done()) pthread_cond_wait(&c_, lock.mutex()->native_handle());
  }
  void notify_all() { pthread_cond_broadcast(&c_); }

 private:
  pthread_cond_t c_;
};
#else
using CondVar = std::condition_variable;
#endif

// bnorm's own pool for forked children (threading.hpp, fork_pool): worker
// threads that take the tasks of one parallel-for at a time, the calling
// thread taking tasks too. Tasks never wait for one another, so a second
// caller that finds the pool busy simply runs its tasks itself.
class ForkPool {
 public:
  static void parallel_for(void* self, int64_t n, bnorm_task_fn task, void* ctx) {
    static_cast<ForkPool*>(self)->run(n, task, ctx);
  }
  void ensure_workers(int want) {
    std::lock_guard<std::mutex> lock(m_);
    for (; workers_ < want; ++workers_) {
      try {
        std::thread(&ForkPool::work, this).detach();
      } catch (...) {
        break;  // no more threads: the caller and the existing ones do it
      }
    }
  }

 private:
  void run(int64_t n, bnorm_task_fn task, void* ctx) {
    std::unique_lock<std::mutex> job(job_mutex_, std::try_to_lock);
    if (!job.owns_lock() || n <= 1) {
      for (int64_t i = 0; i < n; ++i) task(ctx, i);
      return;
    }
    {
      // a worker that joined the previous job late may still hold its task
      // and context: it must leave before next_ is reset
      std::unique_lock<std::mutex> lock(m_);
      finished_.wait(lock, [&] { return busy_ == 0; });
      task_ = task;
      ctx_ = ctx;
      n_ = n;
      next_.store(0);
      done_.store(0);
      ++generation_;
    }
    wake_.notify_all();
    take(task, ctx, n);
    std::unique_lock<std::mutex> lock(m_);
    // every task has returned (a worker still leaving this job is waited for
    // by the next one, before it resets next_)
    finished_.wait(lock, [&] { return done_.load() == n; });
  }
  void take(bnorm_task_fn task, void* ctx, int64_t n) {
    for (int64_t i; (i = next_.fetch_add(1)) < n;) {
      task(ctx, i);
      if (done_.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(m_);
        finished_.notify_all();
      }
    }
  }
  void work() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      const bnorm_task_fn task = task_;
      void* const ctx = ctx_;
      const int64_t n = n_;
      ++busy_;
      lock.unlock();
      take(task, ctx, n);
      lock.lock();
      if (--busy_ == 0) finished_.notify_all();
    }
  }

  std::mutex job_mutex_;  // one parallel-for at a time
  std::mutex m_;
  CondVar wake_, finished_;
  uint64_t generation_ = 0;
  bnorm_task_fn task_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0}, done_{0};
  int busy_ = 0;
  int workers_ = 0;
};

// Set in the child of a fork(); the pool of the current generation. A pool
// inherited from a parent is abandoned, never freed: its threads do not
// exist here and its mutexes may have been held by them.
std::atomic<bool> g_forked{false};
std::atomic<ForkPool*> g_fork_pool{nullptr};
std::mutex g_fork_pool_mutex;

#ifdef BNORM_HAVE_ATFORK
// Around fork(): no bnorm mutex is held by another thread at the moment of
// the fork, so the child can take them.
void before_fork() {
  g_fork_pool_mutex.lock();
  g_pool_mutex.lock();
}
void after_fork_parent() {
  g_pool_mutex.unlock();
  g_fork_pool_mutex.unlock();
}
void after_fork_child() {
  g_forked.store(true);
  g_fork_pool.store(nullptr);
  g_pool_mutex.unlock();
  g_fork_pool_mutex.unlock();
}
[[maybe_unused]] const int g_atfork_registered =
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
#endif

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

// BNORM_L2_BYTES / BNORM_L3_BYTES, when set to a positive number, replace
// what the system reports (the tests use them to reach the paths of large
// tensors with small ones; only the schedule depends on them, never a bit).
int64_t cache_bytes(int level, int64_t fallback, int64_t lo, int64_t hi) {
  try {
    const char* env = std::getenv(level == 2 ? "BNORM_L2_BYTES" : "BNORM_L3_BYTES");
    int64_t v = 0;
    if (env && *env) {
      char* end = nullptr;
      const long long parsed = std::strtoll(env, &end, 10);
      if (end && *end == '\0' && parsed > 0) v = parsed;
    }
    if (v <= 0) v = read_cache_bytes(level, fallback);
    return std::min(std::max(v, lo), hi);
  } catch (...) {
    return fallback;
  }
}
}  // namespace

HostPool host_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  return g_pool;
}

HostPool fork_pool(int threads) {
  HostPool pool;
  if (!g_forked.load() || threads < 2) return pool;
  ForkPool* fp = g_fork_pool.load();
  if (!fp) {
    std::lock_guard<std::mutex> lock(g_fork_pool_mutex);
    fp = g_fork_pool.load();
    if (!fp) {
      fp = new ForkPool();  // lives as long as the process (see g_fork_pool)
      g_fork_pool.store(fp);
    }
  }
  fp->ensure_workers(threads - 1);
  pool.fn = &ForkPool::parallel_for;
  pool.context = fp;
  pool.threads = threads;
  return pool;
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
  if (bnorm::g_forked.load()) return "bnorm";
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
