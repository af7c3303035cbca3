/* bnorm after fork(): a process that ran bnorm on several threads forks;
 * the child's calls must neither hang nor change a bit. Covered: a child's
 * first call; a child that sets its own thread count first; a grandchild
 * (a child of a child that used bnorm's threads); two threads of a child
 * calling at once; and a host thread pool (bnorm_set_parallel_for) set
 * before the fork. Every child runs under alarm(): a hang is a failure, not
 * a stuck test. */
#define _POSIX_C_SOURCE 200809L
#include <bnorm/bnorm.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define N 16
#define C 8
#define HW 1024 /* N * C * HW = 131072 values: the threads are used */
#define TOTAL (N * C * HW)

static float x[TOTAL], dy[TOTAL], y0[TOTAL], dx0[TOTAL];
static float sm0[C], si0[C], dw0[C], db0[C];

#include "check.h"

/* One training step; 0 when its results are the parent's bits. */
static int step_matches(void) {
  static float y[TOTAL], dx[TOTAL];
  float sm[C], si[C], dw[C], db[C];
  if (bnorm_forward_training(BNORM_FLOAT32, N, C, HW, x, y, NULL, NULL, sm, si, NULL, NULL,
                             1e-5, 0.1, 0) != BNORM_OK)
    return 2;
  if (bnorm_backward(BNORM_FLOAT32, N, C, HW, dy, x, sm, si, NULL, dx, dw, db, 0) != BNORM_OK)
    return 2;
  if (memcmp(y, y0, sizeof y) || memcmp(sm, sm0, sizeof sm) || memcmp(si, si0, sizeof si) ||
      memcmp(dx, dx0, sizeof dx) || memcmp(dw, dw0, sizeof dw) || memcmp(db, db0, sizeof db))
    return 1;
  return 0;
}

/* Runs body() in a child with a watchdog; its exit status (0: good). */
static int in_child(int (*body)(void), const char *what) {
  int status = 0;
  const pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return -1;
  }
  if (pid == 0) {
    alarm(60);
    _exit(body());
  }
  if (waitpid(pid, &status, 0) != pid) return -1;
  if (WIFSIGNALED(status)) {
    fprintf(stderr, "%s: child killed by signal %d%s\n", what, WTERMSIG(status),
            WTERMSIG(status) == SIGALRM ? " (it hung)" : "");
    return -1;
  }
  if (WEXITSTATUS(status) != 0)
    fprintf(stderr, "%s: child exited with %d (1: other bits, 2: an error)\n", what,
            WEXITSTATUS(status));
  return WEXITSTATUS(status);
}

static int first_call(void) {
  /* bnorm's own threads in an OpenMP build; the calling thread without */
  const char *b = bnorm_threading_backend();
  if (strcmp(b, "bnorm") != 0 && strcmp(b, "none") != 0) return 8;
  return step_matches();
}

static int own_thread_count(void) {
  bnorm_set_num_threads(3);
  /* (a build without OpenMP always runs on the calling thread) */
  if (bnorm_get_num_threads() != (strcmp(bnorm_threading_backend(), "none") == 0 ? 1 : 3))
    return 3;
  return step_matches();
}

static int grandchild(void) {
  int r = step_matches();
  if (r) return r;
  return in_child(first_call, "grandchild") == 0 ? 0 : 4;
}

static void *thread_step(void *result) {
  *(int *)result = step_matches();
  return NULL;
}

static int two_threads(void) {
  pthread_t t[2];
  int r[2] = {-1, -1}, i, k;
  for (k = 0; k < 3; ++k) {
    for (i = 0; i < 2; ++i)
      if (pthread_create(&t[i], NULL, thread_step, &r[i]) != 0) return 5;
    for (i = 0; i < 2; ++i) pthread_join(t[i], NULL);
    if (r[0] || r[1]) return r[0] ? r[0] : r[1];
  }
  return 0;
}

/* A host pool that starts one thread per task for each call: it works in
 * any process, forked or not. */
typedef struct {
  bnorm_task_fn task;
  void *ctx;
  int64_t i;
} Job;
static void *run_job(void *arg) {
  Job *j = arg;
  j->task(j->ctx, j->i);
  return NULL;
}
static void spawn_pool(void *pool, int64_t n, bnorm_task_fn task, void *ctx) {
  pthread_t t[16];
  Job jobs[16];
  int64_t i;
  (void)pool;
  for (i = 0; i < n && i < 16; ++i) {
    jobs[i].task = task;
    jobs[i].ctx = ctx;
    jobs[i].i = i;
    if (pthread_create(&t[i], NULL, run_job, &jobs[i]) != 0) {
      run_job(&jobs[i]);
      t[i] = pthread_self();
    }
  }
  for (i = 0; i < n && i < 16; ++i)
    if (!pthread_equal(t[i], pthread_self())) pthread_join(t[i], NULL);
  for (; i < n; ++i) task(ctx, i);
}
static int calls_of_pool = 0;
static void counting_pool(void *pool, int64_t n, bnorm_task_fn task, void *ctx) {
  ++calls_of_pool;
  spawn_pool(pool, n, task, ctx);
}
static int host_pool_child(void) {
  const int before = calls_of_pool;
  int r;
  if (strcmp(bnorm_threading_backend(), "host") != 0) return 6;
  r = step_matches();
  if (r) return r;
  return calls_of_pool > before ? 0 : 7; /* the host's pool ran the work */
}

int main(void) {
  uint32_t s = 7u;
  int i;
  for (i = 0; i < TOTAL; ++i) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)(s >> 8) / (float)(1u << 24) * 4.0f - 1.0f;
    s = s * 1664525u + 1013904223u;
    dy[i] = (float)(s >> 8) / (float)(1u << 24) - 0.5f;
  }
  bnorm_set_num_threads(2);
  /* the parent's results, on its threads (OpenMP's, in an OpenMP build) */
  CHECK(bnorm_forward_training(BNORM_FLOAT32, N, C, HW, x, y0, NULL, NULL, sm0, si0, NULL,
                               NULL, 1e-5, 0.1, 0) == BNORM_OK);
  CHECK(bnorm_backward(BNORM_FLOAT32, N, C, HW, dy, x, sm0, si0, NULL, dx0, dw0, db0, 0) ==
        BNORM_OK);
  CHECK(step_matches() == 0);

  CHECK(in_child(first_call, "first call in a child") == 0);
  CHECK(in_child(own_thread_count, "child with set_num_threads(3)") == 0);
  CHECK(in_child(grandchild, "child, then grandchild") == 0);
  CHECK(in_child(two_threads, "two threads of a child") == 0);
  CHECK(step_matches() == 0); /* the parent is unaffected */

  CHECK(bnorm_set_parallel_for(counting_pool, NULL, 2) == BNORM_OK);
  CHECK(step_matches() == 0);
  CHECK(in_child(host_pool_child, "child with the host's pool") == 0);
  CHECK(bnorm_set_parallel_for(NULL, NULL, 0) == BNORM_OK);
  CHECK(in_child(first_call, "child after the host's pool was removed") == 0);

  printf("fork: %d failure(s), backend %s\n", failures, bnorm_threading_backend());
  return failures ? 1 : 0;
}
