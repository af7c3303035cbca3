/* The inference path allocates nothing, and neither does any other
 * operation given a caller-owned workspace (the _ws entry points). This
 * program replaces malloc and friends (glibc lets an executable do that for
 * the whole process, libbnorm and the C++ runtime included) and counts the
 * calls made while they run: with one thread, with a host pool, and on
 * OpenMP's threads once the team exists. */
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

/* One workspace for every _ws call below: the largest any of them needs
 * on the current thread count. */
static void *ws_block;
static size_t ws_bytes;

static size_t need(int op, bnorm_dtype dt, const int64_t *s, int threads) {
  size_t b = 0;
  CHECK(bnorm_workspace_size(op, dt, s[0], s[1], s[2], threads, &b) == BNORM_OK);
  return b;
}

/* Allocations made by a round of every training-side _ws call on several
 * shapes and dtypes (the data buffers hold at least 8*32*3136 floats). */
static long workspace_round(float *x, float *y, float *dx, float *par) {
  static const int64_t shapes[][3] = {
      {8, 32, 3136}, {8 * 3136, 32, 1}, {4096, 64, 1}, {2, 3, 20}, {3, 40, 7}};
  static const bnorm_dtype dtypes[] = {BNORM_FLOAT32, BNORM_BFLOAT16};
  float *w = par + 128, *b = par + 192, *sm = par + 256, *si = par + 320,
        *rm = par + 384, *rv = par + 448, *dw = par + 512, *db = par + 576;
  double mean[64], m2[64], sdy[64], sdyx[64];
  size_t k, d;
  int op;
  for (k = 0; k < sizeof shapes / sizeof shapes[0]; ++k)
    for (d = 0; d < 2; ++d)
      for (op = BNORM_OP_FORWARD_TRAINING; op <= BNORM_OP_FORWARD_INFERENCE; ++op)
        CHECK(need(op, dtypes[d], shapes[k], 0) <= ws_bytes);
  allocations = 0;
  counting = 1;
  for (k = 0; k < sizeof shapes / sizeof shapes[0]; ++k) {
    const int64_t o = shapes[k][0], c = shapes[k][1], in = shapes[k][2];
    for (d = 0; d < 2; ++d) {
      const bnorm_dtype dt = dtypes[d];
      CHECK(bnorm_forward_training_ws(dt, o, c, in, x, NULL, y, w, b, sm, si, rm, rv, 1e-5,
                                      0.1, 0, ws_block, ws_bytes) == BNORM_OK);
      CHECK(bnorm_forward_training_ws(dt, o, c, in, x, y, y, w, b, NULL, NULL, NULL, NULL,
                                      1e-5, 0.1, BNORM_FLAG_RELU, ws_block,
                                      ws_bytes) == BNORM_OK);
      CHECK(bnorm_backward_ws(dt, o, c, in, y, x, NULL, sm, si, w, NULL, dx, dw, db, NULL, 0,
                              ws_block, ws_bytes) == BNORM_OK);
      CHECK(bnorm_backward_ws(dt, o, c, in, y, x, y, sm, si, w, b, dx, dw, db, NULL,
                              BNORM_FLAG_RELU, ws_block, ws_bytes) == BNORM_OK);
      CHECK(bnorm_backward_ws(dt, o, c, in, y, x, NULL, sm, si, w, b, dx, dw, db, NULL,
                              BNORM_FLAG_RELU | BNORM_FLAG_FROZEN_STATS, ws_block,
                              ws_bytes) == BNORM_OK);
      CHECK(bnorm_moments_ws(dt, o, c, in, x, mean, m2, ws_block, ws_bytes) == BNORM_OK);
      CHECK(bnorm_forward_normalize_ws(dt, o, c, in, x, y, o * in, mean, m2, w, b, sm, si,
                                       rm, rv, 1e-5, 0.1, 0, ws_block,
                                       ws_bytes) == BNORM_OK);
      CHECK(bnorm_backward_reduce_ws(dt, o, c, in, y, x, sm, sdy, sdyx, ws_block,
                                     ws_bytes) == BNORM_OK);
      CHECK(bnorm_backward_apply_ws(dt, o, c, in, y, x, sm, si, w, sdy, sdyx, o * in, dx,
                                    dw, db, ws_block, ws_bytes) == BNORM_OK);
    }
  }
  counting = 0;
  return allocations;
}

int main(void) {
  const size_t n = 8 * 32 * 3136;
  float *x = (float *)__libc_malloc(n * sizeof(float));
  float *y = (float *)__libc_malloc(n * sizeof(float));
  float *dx = (float *)__libc_malloc(n * sizeof(float));
  float par[640];
  size_t i;
  long got;
  for (i = 0; i < n; ++i) x[i] = (float)(i % 97) * 0.01f;
  for (i = 0; i < 64; ++i) {
    par[i] = 0.1f;
    par[64 + i] = 1.5f;
    par[128 + i] = 2.0f;
    par[192 + i] = -0.5f;
    par[384 + i] = 0.0f;
    par[448 + i] = 1.0f;
  }
  /* the largest workspace of the shapes of workspace_round, on up to 2
   * threads (OpenMP's or the host pool's) */
  {
    static const int64_t big[][3] = {{8, 32, 3136}, {8 * 3136, 32, 1}, {4096, 64, 1}};
    int op;
    size_t k;
    for (k = 0; k < 3; ++k)
      for (op = BNORM_OP_FORWARD_TRAINING; op <= BNORM_OP_FORWARD_INFERENCE; ++op) {
        size_t b = need(op, BNORM_FLOAT32, big[k], 2);
        if (b > ws_bytes) ws_bytes = b;
      }
  }
  ws_block = __libc_malloc(ws_bytes);
  printf("workspace: %zu bytes\n", ws_bytes);
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
  workspace_round(x, y, dx, par); /* first calls of each kernel; not counted */
  got = workspace_round(x, y, dx, par);
  printf("one thread, every _ws call: %ld allocations\n", got);
  CHECK(got == 0);

  CHECK(bnorm_set_parallel_for(serial_for, NULL, 2) == BNORM_OK);
  got = inference_round(x, y, par);
  printf("host pool (2 parts): %ld allocations\n", got);
  CHECK(got == 0);
  got = workspace_round(x, y, dx, par);
  printf("host pool (2 parts), every _ws call: %ld allocations\n", got);
  CHECK(got == 0);
  CHECK(bnorm_set_parallel_for(NULL, NULL, 0) == BNORM_OK);

  bnorm_set_num_threads(2);
  inference_round(x, y, par); /* OpenMP starts its team here */
  got = inference_round(x, y, par);
  printf("%s, %d threads, team running: %ld allocations\n", bnorm_threading_backend(),
         bnorm_get_num_threads(), got);
  CHECK(got == 0);
  workspace_round(x, y, dx, par);
  got = workspace_round(x, y, dx, par);
  printf("%s, %d threads, every _ws call: %ld allocations\n", bnorm_threading_backend(),
         bnorm_get_num_threads(), got);
  CHECK(got == 0);

  /* the control: without a workspace the same calls allocate */
  {
    void *keep = ws_block;
    ws_block = NULL;
    got = workspace_round(x, y, dx, par);
    printf("the same calls with workspace NULL (control): %ld allocations\n", got);
    CHECK(got > 0);
    ws_block = keep;
  }

  __libc_free(x);
  __libc_free(y);
  __libc_free(dx);
  __libc_free(ws_block);
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
