/* bnorm_set_parallel_for: bnorm's parallel work on the host's own threads.
 * Every op, on shapes that take each code path, must give the same bytes
 * with a serial pool that runs tasks backwards, with a pthread pool, and with
 * the default threads; the pool must really be used, and small calls and a
 * NULL pool must not use it. */
#include <bnorm/bnorm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                 \
      ++failures;                                                     \
    }                                                                 \
  } while (0)

/* ---- a serial pool: tasks in reverse order on the calling thread ---- */
static long serial_calls = 0, serial_tasks = 0;
static void serial_for(void *ctx, int64_t n, bnorm_task_fn task, void *task_ctx) {
  int64_t i;
  (void)ctx;
  ++serial_calls;
  for (i = n - 1; i >= 0; --i) {
    task(task_ctx, i);
    ++serial_tasks;
  }
}

/* ---- a pthread pool: one thread per task, started per call ---- */
struct job {
  bnorm_task_fn task;
  void *task_ctx;
  int64_t index;
};
static void *run_job(void *p) {
  struct job *j = (struct job *)p;
  j->task(j->task_ctx, j->index);
  return NULL;
}
static long pthread_calls = 0;
static void pthread_for(void *ctx, int64_t n, bnorm_task_fn task, void *task_ctx) {
  pthread_t th[16];
  struct job jobs[16];
  int64_t i;
  (void)ctx;
  ++pthread_calls;
  if (n > 16) { /* more than this pool holds: run inline */
    for (i = 0; i < n; ++i) task(task_ctx, i);
    return;
  }
  for (i = 0; i < n; ++i) {
    jobs[i].task = task;
    jobs[i].task_ctx = task_ctx;
    jobs[i].index = i;
    if (pthread_create(&th[i], NULL, run_job, &jobs[i]) != 0) {
      run_job(&jobs[i]);
      th[i] = pthread_self();
    }
  }
  for (i = 0; i < n; ++i)
    if (!pthread_equal(th[i], pthread_self())) pthread_join(th[i], NULL);
}

/* ---- every op on one shape, outputs hashed into one buffer ---- */
struct shape {
  int64_t outer, channels, inner;
};
/* Runs training forward, inference and both backwards in float32 and
 * float64; writes all outputs one after another into out (bytes). */
static size_t run_all(struct shape s, unsigned char *out) {
  const int64_t n = s.outer * s.channels * s.inner, C = s.channels;
  size_t used = 0;
  int dt;
  for (dt = 0; dt < 2; ++dt) {
    const bnorm_dtype dtype = dt ? BNORM_FLOAT64 : BNORM_FLOAT32;
    const size_t es = dt ? 8 : 4;
    unsigned char *x = malloc(n * es), *dy = malloc(n * es), *y = malloc(n * es),
                  *dx = malloc(n * es), *par = malloc(8 * C * es);
    unsigned char *w = par, *b = par + C * es, *sm = par + 2 * C * es,
                  *si = par + 3 * C * es, *rm = par + 4 * C * es,
                  *rv = par + 5 * C * es, *dw = par + 6 * C * es,
                  *db = par + 7 * C * es;
    int64_t i;
    unsigned r = 12345u;
    for (i = 0; i < n; ++i) {
      double v, g;
      r = r * 1103515245u + 12345u;
      v = 3.0 + (double)(r >> 8) / (1 << 24);
      r = r * 1103515245u + 12345u;
      g = (double)(r >> 8) / (1 << 24) - 0.5;
      if (dt) {
        ((double *)x)[i] = v;
        ((double *)dy)[i] = g;
      } else {
        ((float *)x)[i] = (float)v;
        ((float *)dy)[i] = (float)g;
      }
    }
    for (i = 0; i < C; ++i) {
      if (dt) {
        ((double *)w)[i] = 1.0 + 0.01 * i;
        ((double *)b)[i] = -0.5 + 0.02 * i;
        ((double *)rm)[i] = 0.0;
        ((double *)rv)[i] = 1.0;
      } else {
        ((float *)w)[i] = 1.0f + 0.01f * i;
        ((float *)b)[i] = -0.5f + 0.02f * i;
        ((float *)rm)[i] = 0.0f;
        ((float *)rv)[i] = 1.0f;
      }
    }
    CHECK(bnorm_forward_training(dtype, s.outer, C, s.inner, x, y, w, b, sm, si,
                                 rm, rv, 1e-5, 0.1, 0) == BNORM_OK);
    memcpy(out + used, y, n * es), used += n * es;
    memcpy(out + used, sm, 4 * C * es), used += 4 * C * es; /* sm si rm rv */
    CHECK(bnorm_backward(dtype, s.outer, C, s.inner, dy, x, sm, si, w, dx, dw, db,
                         0) == BNORM_OK);
    memcpy(out + used, dx, n * es), used += n * es;
    memcpy(out + used, dw, 2 * C * es), used += 2 * C * es;
    CHECK(bnorm_backward(dtype, s.outer, C, s.inner, dy, x, sm, si, w, dx, dw, db,
                         BNORM_FLAG_FROZEN_STATS) == BNORM_OK);
    memcpy(out + used, dx, n * es), used += n * es;
    memcpy(out + used, dw, 2 * C * es), used += 2 * C * es;
    CHECK(bnorm_forward_inference(dtype, s.outer, C, s.inner, x, y, rm, rv, w, b,
                                  1e-5) == BNORM_OK);
    memcpy(out + used, y, n * es), used += n * es;
    free(x), free(dy), free(y), free(dx), free(par);
  }
  return used;
}

static size_t bytes_for(struct shape s) {
  const size_t n = (size_t)(s.outer * s.channels * s.inner), C = (size_t)s.channels;
  return 12 * (4 * n + 8 * C);
}

int main(void) {
  /* planar cached, planar larger than the cache, channels last (rows),
   * few channels (batch x spatial split), (N, C) */
  const struct shape shapes[] = {{16, 64, 196, }, {16, 32, 56 * 56}, {4096, 96, 1},
                                 {64, 3, 1024},  {20000, 8, 1}};
  const size_t nshapes = sizeof shapes / sizeof shapes[0];
  size_t k;
  const int default_threads = bnorm_get_num_threads();

  CHECK(bnorm_set_parallel_for(serial_for, NULL, 0) == BNORM_ERROR_INVALID_ARGUMENT);
  CHECK(bnorm_set_parallel_for(serial_for, NULL, -3) == BNORM_ERROR_INVALID_ARGUMENT);
  CHECK(bnorm_get_num_threads() == default_threads);

  for (k = 0; k < nshapes; ++k) {
    const size_t bytes = bytes_for(shapes[k]);
    unsigned char *ref = malloc(bytes), *got = malloc(bytes);
    size_t used;
    long calls;
    CHECK(bnorm_set_parallel_for(NULL, NULL, 0) == BNORM_OK);
    used = run_all(shapes[k], ref);
    CHECK(used <= bytes);

    CHECK(bnorm_set_parallel_for(serial_for, NULL, 3) == BNORM_OK);
    CHECK(bnorm_get_num_threads() == 3);
    CHECK(strcmp(bnorm_threading_backend(), "host") == 0);
    calls = serial_calls;
    memset(got, 0xAB, bytes);
    CHECK(run_all(shapes[k], got) == used);
    CHECK(memcmp(ref, got, used) == 0);
    CHECK(serial_calls > calls); /* the host pool did the work */

    CHECK(bnorm_set_parallel_for(pthread_for, NULL, 4) == BNORM_OK);
    calls = pthread_calls;
    memset(got, 0xCD, bytes);
    CHECK(run_all(shapes[k], got) == used);
    CHECK(memcmp(ref, got, used) == 0);
    CHECK(pthread_calls > calls);
    free(ref), free(got);
  }

  /* A small call runs on the calling thread without the pool. */
  {
    float x[24], y[24];
    int i;
    long calls;
    for (i = 0; i < 24; ++i) x[i] = (float)i;
    CHECK(bnorm_set_parallel_for(serial_for, NULL, 2) == BNORM_OK);
    calls = serial_calls;
    CHECK(bnorm_forward_training(BNORM_FLOAT32, 2, 3, 4, x, y, NULL, NULL, NULL,
                                 NULL, NULL, NULL, 1e-5, 0.1, 0) == BNORM_OK);
    CHECK(serial_calls == calls);
  }

  /* NULL restores the default. */
  CHECK(bnorm_set_parallel_for(NULL, NULL, 0) == BNORM_OK);
  CHECK(bnorm_get_num_threads() == default_threads);
  CHECK(strcmp(bnorm_threading_backend(), "openmp") == 0 ||
        strcmp(bnorm_threading_backend(), "none") == 0);
  {
    long calls = serial_calls;
    unsigned char *buf = malloc(bytes_for(shapes[1]));
    run_all(shapes[1], buf);
    CHECK(serial_calls == calls);
    free(buf);
  }

  if (failures) {
    printf("%d failed\n", failures);
    return 1;
  }
  printf("host pool tests passed (%ld serial pool calls, %ld tasks; %ld pthread pool calls)\n",
         serial_calls, serial_tasks, pthread_calls);
  return 0;
}
