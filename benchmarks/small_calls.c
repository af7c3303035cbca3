/* The cost of a small call through the C API, with the workspace allocated
 * by bnorm per call and with a caller-owned one (the _ws entry points), on
 * the (2, 3, 4, 5) tensor of the Python small-call figures. Build against
 * the installed package and run:
 *
 *   cc -O2 benchmarks/small_calls.c -I"$(python -m bnorm --includedir)" \
 *      -L"$(python -m bnorm --libdir)" -Wl,-rpath,"$(python -m bnorm --libdir)" \
 *      -lbnorm -o small_calls && ./small_calls
 *
 * Prints the median over 15 rounds of the mean time per call. */
#define _POSIX_C_SOURCE 199309L
#include <bnorm/bnorm.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N (2 * 3 * 4 * 5)
#define CALLS 20000
#define ROUNDS 15

static float x[N], y[N], dy[N], dx[N];
static float w[3] = {1, 1, 1}, b[3] = {0, 0, 0}, sm[3], si[3], rm[3], rv[3] = {1, 1, 1};
static float dw[3], db[3];
static unsigned char ws[4096];

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  const double d = *(const double *)a - *(const double *)b;
  return (d > 0) - (d < 0);
}

/* which: 0 inference, 1 training (bnorm allocates), 2 training with a
 * workspace, 3 backward (bnorm allocates), 4 backward with a workspace */
static bnorm_status one(int which) {
  switch (which) {
    case 0:
      return bnorm_forward_inference(BNORM_FLOAT32, 2, 3, 20, x, y, rm, rv, w, b, 1e-5);
    case 1:
      return bnorm_forward_training(BNORM_FLOAT32, 2, 3, 20, x, y, w, b, sm, si, rm, rv,
                                    1e-5, 0.1, 0);
    case 2:
      return bnorm_forward_training_ws(BNORM_FLOAT32, 2, 3, 20, x, NULL, y, w, b, sm, si, rm,
                                       rv, 1e-5, 0.1, 0, ws, sizeof ws);
    case 3:
      return bnorm_backward(BNORM_FLOAT32, 2, 3, 20, dy, x, sm, si, w, dx, dw, db, 0);
    default:
      return bnorm_backward_ws(BNORM_FLOAT32, 2, 3, 20, dy, x, NULL, sm, si, w, NULL, dx, dw,
                               db, NULL, 0, ws, sizeof ws);
  }
}

int main(void) {
  static const char *const names[] = {
      "inference", "training, bnorm allocates", "training, caller's workspace",
      "backward, bnorm allocates", "backward, caller's workspace"};
  size_t need = 0;
  int i, k, r;
  for (i = 0; i < N; ++i) x[i] = (float)(i % 7), dy[i] = (float)(i % 5) - 2;
  bnorm_workspace_size(BNORM_OP_BACKWARD, BNORM_FLOAT32, 2, 3, 20, 0, &need);
  printf("bnorm %s (%s), (2, 3, 4, 5) float32; workspace %zu bytes\n",
         bnorm_version_string(), bnorm_kernel_isa(), need);
  for (k = 0; k < 5; ++k) {
    double t[ROUNDS];
    for (r = 0; r < ROUNDS; ++r) {
      const double t0 = now();
      for (i = 0; i < CALLS; ++i)
        if (one(k) != BNORM_OK) return 1;
      t[r] = (now() - t0) / CALLS;
    }
    qsort(t, ROUNDS, sizeof t[0], cmp);
    printf("  %-30s %6.0f ns per call\n", names[k], t[ROUNDS / 2] * 1e9);
  }
  return 0;
}
