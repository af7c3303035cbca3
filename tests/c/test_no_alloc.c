/* The inference path allocates nothing (SPEC: "The inference path allocates
 * nothing"). This program replaces malloc and friends (glibc lets an
 * executable do that for the whole process, libbnorm and the C++ runtime
 * included) and counts the calls made while bnorm_forward_inference and the
 * inference helpers run: with one thread, with a host pool, and on OpenMP's
 * threads once the team exists. */
#include <bnorm/bnorm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#include <errno.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile int counting = 0;
static volatile long allocations = 0;
#define COUNT() \
  do {          \
    if (counting) __sync_fetch_and_add(&allocations, 1); \
  } while (0)

void *malloc(size_t n) {
  COUNT();
  return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
  COUNT();
  return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
  COUNT();
  return __libc_realloc(p, n);
}
void *memalign(size_t al, size_t n) {
  COUNT();
  return __libc_memalign(al, n);
}
void *aligned_alloc(size_t al, size_t n) {
  COUNT();
  return __libc_memalign(al, n);
}
int posix_memalign(void **out, size_t al, size_t n) {
  void *p;
  COUNT();
  p = __libc_memalign(al, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void free(void *p) { __libc_free(p); }

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                 \
      ++failures;                                                     \
    }                                                                 \
  } while (0)

static void serial_for(void *ctx, int64_t n, bnorm_task_fn task, void *task_ctx) {
  int64_t i;
  (void)ctx;
  for (i = 0; i < n; ++i) task(task_ctx, i);
}

/* Allocations made by a round of inference calls on several shapes. */
static long inference_round(float *x, float *y, const float *par) {
  /* planar, channels last, (N, C), small */
  static const int64_t shapes[][3] = {
      {8, 32, 3136}, {8 * 3136, 32, 1}, {4096, 64, 1}, {2, 3, 20}};
  const float *mean = par, *var = par + 64, *w = par + 128, *b = par + 192;
  float scale[64], shift[64];
  float fw[64 * 9], fb[64];
  size_t k;
  allocations = 0;
  counting = 1;
  for (k = 0; k < sizeof shapes / sizeof shapes[0]; ++k)
    CHECK(bnorm_forward_inference(BNORM_FLOAT32, shapes[k][0], shapes[k][1],
                                  shapes[k][2], x, y, mean, var, w, b, 1e-5) == BNORM_OK);
  CHECK(bnorm_forward_inference(BNORM_FLOAT32, 8, 32, 3136, x, x, mean, var, NULL,
                                NULL, 1e-5) == BNORM_OK); /* in place */
  CHECK(bnorm_inference_scale_shift(BNORM_FLOAT32, 64, mean, var, w, b, 1e-5, scale,
                                    shift) == BNORM_OK);
  CHECK(bnorm_fold_into_layer(BNORM_FLOAT32, 1, 64, 9, x, b, mean, var, w, b, 1e-5,
                              fw, fb) == BNORM_OK);
  counting = 0;
  return allocations;
}

int main(void) {
  const size_t n = 8 * 32 * 3136;
  float *x = (float *)__libc_malloc(n * sizeof(float));
  float *y = (float *)__libc_malloc(n * sizeof(float));
  float par[256];
  size_t i;
  long got;
  for (i = 0; i < n; ++i) x[i] = (float)(i % 97) * 0.01f;
  for (i = 0; i < 64; ++i) {
    par[i] = 0.1f;
    par[64 + i] = 1.5f;
    par[128 + i] = 2.0f;
    par[192 + i] = -0.5f;
  }
  /* the first call picks the kernels (once per process); not counted */
  inference_round(x, y, par);

  bnorm_set_num_threads(1);
  /* The counter sees the library's allocations: training forward takes its
   * scratch from the heap (it may; only inference must not). */
  allocations = 0;
  counting = 1;
  CHECK(bnorm_forward_training(BNORM_FLOAT32, 8, 32, 3136, x, y, NULL, NULL, NULL,
                               NULL, NULL, NULL, 1e-5, 0.1, 0) == BNORM_OK);
  counting = 0;
  printf("training forward (control): %ld allocations\n", allocations);
  CHECK(allocations > 0);

  got = inference_round(x, y, par);
  printf("one thread: %ld allocations\n", got);
  CHECK(got == 0);

  CHECK(bnorm_set_parallel_for(serial_for, NULL, 4) == BNORM_OK);
  got = inference_round(x, y, par);
  printf("host pool (4 parts): %ld allocations\n", got);
  CHECK(got == 0);
  CHECK(bnorm_set_parallel_for(NULL, NULL, 0) == BNORM_OK);

  bnorm_set_num_threads(2);
  inference_round(x, y, par); /* OpenMP starts its team here */
  got = inference_round(x, y, par);
  printf("%s, %d threads, team running: %ld allocations\n", bnorm_threading_backend(),
         bnorm_get_num_threads(), got);
  CHECK(got == 0);

  __libc_free(x);
  __libc_free(y);
  if (failures) {
    printf("%d failed\n", failures);
    return 1;
  }
  printf("no-allocation tests passed\n");
  return 0;
}
#else
int main(void) {
  printf("no-allocation test skipped (needs glibc, without a sanitizer)\n");
  return 0;
}
#endif
