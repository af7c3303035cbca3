/* Many C threads calling every op at once on shared read-only inputs get
 * the bytes of serial calls, while another thread keeps changing the thread
 * count and switching a host pool on and off (results never depend on
 * either). */
#include <bnorm/bnorm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define CALLS 50

static int failures = 0;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static void fail(const char *what) {
  pthread_mutex_lock(&fail_lock);
  fprintf(stderr, "FAILED: %s\n", what);
  ++failures;
  pthread_mutex_unlock(&fail_lock);
}

struct shape {
  int64_t outer, channels, inner;
};
static const struct shape shapes[] = {{8, 16, 1024}, {4096, 24, 1}, {2, 3, 20}, {3, 2, 30000}};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

/* shared read-only inputs, and the serial results */
static float *xs[NSHAPES], *dys[NSHAPES], *w, *b, *rm, *rv;
static unsigned char *want[NSHAPES];
static size_t want_bytes[NSHAPES];

static size_t result_bytes(struct shape s) {
  return (size_t)(4 * s.outer * s.channels * s.inner + 8 * s.channels) * sizeof(float);
}

/* All ops on shape k; results into out (result_bytes). 0 on success. */
static int run_ops(size_t k, unsigned char *out) {
  const struct shape s = shapes[k];
  const int64_t n = s.outer * s.channels * s.inner, C = s.channels;
  float *y = (float *)out, *dx = y + n, *dxf = dx + n, *yi = dxf + n;
  float *sm = yi + n, *si = sm + C, *dw = si + C, *db = dw + C, *dwf = db + C,
        *dbf = dwf + C, *scale = dbf + C, *shift = scale + C;
  if (bnorm_forward_training(BNORM_FLOAT32, s.outer, C, s.inner, xs[k], y, w, b, sm, si,
                             NULL, NULL, 1e-5, 0.1, 0) != BNORM_OK)
    return 1;
  if (bnorm_backward(BNORM_FLOAT32, s.outer, C, s.inner, dys[k], xs[k], sm, si, w, dx, dw,
                     db, 0) != BNORM_OK)
    return 1;
  if (bnorm_backward(BNORM_FLOAT32, s.outer, C, s.inner, dys[k], xs[k], rm, si, w, dxf,
                     dwf, dbf, BNORM_FLAG_FROZEN_STATS) != BNORM_OK)
    return 1;
  if (bnorm_forward_inference(BNORM_FLOAT32, s.outer, C, s.inner, xs[k], yi, rm, rv, w, b,
                              1e-5) != BNORM_OK)
    return 1;
  if (bnorm_inference_scale_shift(BNORM_FLOAT32, C, rm, rv, w, b, 1e-5, scale, shift) !=
      BNORM_OK)
    return 1;
  return 0;
}

static void serial_for(void *ctx, int64_t n, bnorm_task_fn task, void *task_ctx) {
  int64_t i;
  (void)ctx;
  for (i = n - 1; i >= 0; --i) task(task_ctx, i);
}

static volatile int stop_toggling = 0;
static void *toggler(void *arg) {
  int i = 0;
  (void)arg;
  while (!stop_toggling) {
    bnorm_set_num_threads(1 + i % 4);
    bnorm_set_parallel_for(i % 3 == 0 ? serial_for : NULL, NULL, 1 + i % 3);
    ++i;
  }
  bnorm_set_parallel_for(NULL, NULL, 0);
  bnorm_set_num_threads(0);
  return NULL;
}

static void *worker(void *arg) {
  const size_t id = (size_t)arg;
  int call;
  for (call = 0; call < CALLS; ++call) {
    const size_t k = (id + call) % NSHAPES;
    unsigned char *got = malloc(want_bytes[k]);
    memset(got, 0x5A, want_bytes[k]);
    if (run_ops(k, got) != 0) fail("a call failed");
    else if (memcmp(got, want[k], want_bytes[k]) != 0) fail("bytes differ from a serial call");
    free(got);
  }
  return NULL;
}

int main(void) {
  pthread_t th[THREADS], tog;
  size_t k, i;
  const int64_t maxc = 64;
  w = malloc(4 * maxc * sizeof(float));
  b = w + maxc;
  rm = b + maxc;
  rv = rm + maxc;
  for (i = 0; i < (size_t)maxc; ++i) {
    w[i] = 1.0f + 0.01f * i;
    b[i] = 0.1f * i;
    rm[i] = 0.5f;
    rv[i] = 2.0f;
  }
  for (k = 0; k < NSHAPES; ++k) {
    const size_t n = (size_t)(shapes[k].outer * shapes[k].channels * shapes[k].inner);
    unsigned r = 7u + (unsigned)k;
    xs[k] = malloc(n * sizeof(float));
    dys[k] = malloc(n * sizeof(float));
    for (i = 0; i < n; ++i) {
      r = r * 1103515245u + 12345u;
      xs[k][i] = 2.0f + (float)(r >> 9) / (1 << 23);
      r = r * 1103515245u + 12345u;
      dys[k][i] = (float)(r >> 9) / (1 << 23) - 0.5f;
    }
    want_bytes[k] = result_bytes(shapes[k]);
    want[k] = malloc(want_bytes[k]);
    if (run_ops(k, want[k]) != 0) fail("serial call failed");
  }
  pthread_create(&tog, NULL, toggler, NULL);
  for (i = 0; i < THREADS; ++i) pthread_create(&th[i], NULL, worker, (void *)i);
  for (i = 0; i < THREADS; ++i) pthread_join(th[i], NULL);
  stop_toggling = 1;
  pthread_join(tog, NULL);
  if (failures) {
    printf("%d failed\n", failures);
    return 1;
  }
  printf("concurrency: %d threads x %d rounds of 5 ops = %d calls, all bitwise equal to "
         "serial calls\n", THREADS, CALLS, THREADS * CALLS * 5);
  return 0;
}
