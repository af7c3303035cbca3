/* The caller-owned workspace: every _ws entry point, with a block of the
 * size bnorm_workspace_size reports (filled with garbage, at odd
 * alignments), gives bitwise the results of the call that allocates; a block
 * one byte short is refused with WORKSPACE_TOO_SMALL and a workspace over
 * any buffer of the call with OVERLAP, both before anything is written; and
 * the size query checks its arguments (In-Place ABN's backward from the
 * output among them, with and without a residual, frozen or not). Run on 1
 * and 2 threads, for every
 * dtype, on planar, channels-last, (N, C) and small shapes; with the
 * argument "small-cache", with the cache sizes lowered (BNORM_L2_BYTES,
 * BNORM_L3_BYTES) so that these small tensors take the large-tensor
 * schedules (phases instead of whole blocks, streaming stores). */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <bnorm/bnorm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MAXN (64 * 40 * 36)
#define MAXC 64

static const bnorm_dtype kDtypes[] = {BNORM_FLOAT32, BNORM_FLOAT64, BNORM_FLOAT16,
                                      BNORM_BFLOAT16};
static const int64_t kShapes[][3] = {
    {64, 40, 36}, {64 * 36, 40, 1}, {512, 64, 1}, {2, 3, 5}, {3, 17, 7}, {4000, 3, 1}};

/* Every buffer of a call, in one arena so that "nothing written" is one
 * comparison. */
enum { X, Y, DY, DX, DRES, W, B, SM, SI, RM, RV, DW, DB, MEAN, M2, SDY, SDYX, NBUF };
static unsigned char *buf[NBUF];
static size_t bytes[NBUF];

static void fill(bnorm_dtype dt, int64_t n, int64_t c, unsigned seed) {
  int i, k;
  srand(seed);
  for (i = 0; i < NBUF; ++i) memset(buf[i], 0, bytes[i]);
  for (i = X; i <= DY; ++i)
    for (k = 0; k < n; ++k) {
      const double v = (rand() % 2001 - 1000) / 250.0;
      if (dt == BNORM_FLOAT64) {
        ((double *)buf[i])[k] = v;
      } else if (dt == BNORM_FLOAT32) {
        ((float *)buf[i])[k] = (float)v;
      } else {
        /* a value that is exact in both half formats: k/64 for small k */
        const float f = (float)((rand() % 256) - 128) / 64.0f;
        uint32_t u;
        uint16_t h;
        memcpy(&u, &f, 4);
        if (dt == BNORM_BFLOAT16) {
          h = (uint16_t)(u >> 16);
        } else { /* float16 of f: |f| <= 2, 8 significant bits */
          const int neg = f < 0;
          float a = neg ? -f : f;
          int e = 0;
          uint16_t m;
          if (a == 0) {
            h = neg ? 0x8000 : 0;
          } else {
            while (a >= 2) { a /= 2; ++e; }
            while (a < 1) { a *= 2; --e; }
            m = (uint16_t)((a - 1) * 1024);
            h = (uint16_t)((neg ? 0x8000 : 0) | ((e + 15) << 10) | m);
          }
        }
        ((uint16_t *)buf[i])[k] = h;
      }
    }
  for (i = W; i <= RV; ++i)
    for (k = 0; k < c; ++k) {
      const double v = i == SI || i == RV ? 0.5 + k * 0.01 : (k % 7 - 3) * 0.25;
      if (dt == BNORM_FLOAT64)
        ((double *)buf[i])[k] = v;
      else
        ((float *)buf[i])[k] = (float)v;
    }
  for (k = 0; k < c; ++k) {
    ((double *)buf[MEAN])[k] = 0.1 * k;
    ((double *)buf[M2])[k] = 3.0 + k;
    ((double *)buf[SDY])[k] = 0.5 * k - 2;
    ((double *)buf[SDYX])[k] = 1.0 - 0.25 * k;
  }
}

/* Runs op `op` (variant v) with the workspace ws (NULL: bnorm allocates). */
static bnorm_status call(int op, int v, bnorm_dtype dt, const int64_t *s, void *ws,
                         size_t wsb) {
  const int64_t o = s[0], c = s[1], in = s[2];
  switch (op) {
    case BNORM_OP_FORWARD_TRAINING:
      return bnorm_forward_training_ws(dt, o, c, in, buf[X], v ? buf[DY] : NULL, buf[Y],
                                       buf[W], buf[B], buf[SM], buf[SI], buf[RM], buf[RV],
                                       1e-3, 0.1, v ? BNORM_FLAG_RELU : 0, ws, wsb);
    case BNORM_OP_BACKWARD:
      return bnorm_backward_ws(dt, o, c, in, buf[DY], buf[X], v == 1 ? buf[Y] : NULL,
                               buf[SM], buf[SI], buf[W], buf[B], buf[DX], buf[DW], buf[DB],
                               v ? buf[DRES] : NULL,
                               v == 0 ? 0 : v == 1 ? BNORM_FLAG_RELU
                                               : BNORM_FLAG_RELU | BNORM_FLAG_FROZEN_STATS,
                               ws, wsb);
    case BNORM_OP_MOMENTS:
      return bnorm_moments_ws(dt, o, c, in, buf[X], (double *)buf[MEAN],
                              (double *)buf[M2], ws, wsb);
    case BNORM_OP_FORWARD_NORMALIZE:
      return bnorm_forward_normalize_ws(dt, o, c, in, buf[X], buf[Y], o * in + 5,
                                        (const double *)buf[MEAN], (const double *)buf[M2],
                                        buf[W], buf[B], buf[SM], buf[SI], buf[RM], buf[RV],
                                        1e-3, 0.1, 0, ws, wsb);
    case BNORM_OP_BACKWARD_REDUCE:
      return bnorm_backward_reduce_ws(dt, o, c, in, buf[DY], buf[X], buf[SM],
                                      (double *)buf[SDY], (double *)buf[SDYX], ws, wsb);
    case BNORM_OP_BACKWARD_FROM_OUTPUT:
      /* (SI as the scale: W has zeros, which have no inverse) */
      return bnorm_backward_from_output_ws(
          dt, o, c, in, buf[DY], buf[Y], v == 1 ? buf[X] : NULL, buf[SI], buf[SI], buf[B],
          buf[DX], v == 1 ? buf[DRES] : NULL, buf[DW], buf[DB],
          v == 0 ? BNORM_ACT_LEAKY_RELU : v == 1 ? BNORM_ACT_IDENTITY : BNORM_ACT_ELU,
          v == 0 ? 0.1 : 5.0, v == 2 ? BNORM_FLAG_FROZEN_STATS : 0, ws, wsb);
    default:
      return bnorm_backward_apply_ws(dt, o, c, in, buf[DY], buf[X], buf[SM], buf[SI], buf[W],
                                     (const double *)buf[SDY], (const double *)buf[SDYX],
                                     o * in + 5, buf[DX], buf[DW], buf[DB], ws, wsb);
  }
}

static unsigned char *snapshot(void) {
  size_t total = 0, at = 0;
  int i;
  unsigned char *s;
  for (i = 0; i < NBUF; ++i) total += bytes[i];
  s = (unsigned char *)malloc(total);
  for (i = 0; i < NBUF; ++i) {
    memcpy(s + at, buf[i], bytes[i]);
    at += bytes[i];
  }
  return s;
}
static int same_as(const unsigned char *s) {
  size_t at = 0;
  int i;
  for (i = 0; i < NBUF; ++i) {
    if (memcmp(s + at, buf[i], bytes[i]) != 0) return 0;
    at += bytes[i];
  }
  return 1;
}

static long compared = 0, refused = 0;

static void one(int op, int v, bnorm_dtype dt, const int64_t *s, int threads) {
  unsigned char *want, *before;
  size_t need = 0, k;
  unsigned char *block;
  int shift;
  const int64_t n = s[0] * s[1] * s[2];
  /* the size for the thread count the call runs on (0: the current one) */
  (void)threads;
  CHECK(bnorm_workspace_size(op, dt, s[0], s[1], s[2], 0, &need) == BNORM_OK);
  fill(dt, n, s[1], 7u + (unsigned)op);
  CHECK(call(op, v, dt, s, NULL, 0) == BNORM_OK);
  want = snapshot();
  block = (unsigned char *)malloc(need + 64);
  for (shift = 0; shift < 64; shift += 24) {
    unsigned char *ws = block + shift;
    for (k = 0; k < need; ++k) ws[k] = (unsigned char)(k * 131 + shift);
    fill(dt, n, s[1], 7u + (unsigned)op);
    CHECK(call(op, v, dt, s, ws, need) == BNORM_OK);
    if (!same_as(want)) {
      fprintf(stderr, "op %d/%d dtype %d shape %lld,%lld,%lld threads %d shift %d: "
              "_ws result differs\n", op, v, (int)dt, (long long)s[0], (long long)s[1],
              (long long)s[2], threads, shift);
      ++failures;
    }
    ++compared;
  }
  if (need > 0) {
    /* one byte short: refused, nothing written */
    fill(dt, n, s[1], 7u + (unsigned)op);
    before = snapshot();
    CHECK(call(op, v, dt, s, block, need - 1) == BNORM_ERROR_WORKSPACE_TOO_SMALL);
    CHECK(same_as(before));
    /* over an output, or over an input: refused, nothing written (the
     * span may run past the buffer: a refused call touches none of it) */
    {
      static const int out_of[] = {0, Y, DX, MEAN, Y, SDY, DX, 0, DX};
      static const int in_of[] = {0, X, X, X, X, X, X, 0, Y};
      CHECK(call(op, v, dt, s, buf[out_of[op]] + 8, need) == BNORM_ERROR_OVERLAP);
      CHECK(call(op, v, dt, s, buf[in_of[op]] + 8, need) == BNORM_ERROR_OVERLAP);
      CHECK(call(op, v, dt, s, buf[in_of[op]], need) == BNORM_ERROR_OVERLAP);
    }
    CHECK(same_as(before));
    refused += 4;
    free(before);
  }
  free(block);
  free(want);
}

int main(int argc, char **argv) {
  int i, op, v, d;
  size_t k, b;
  if (argc > 1 && strcmp(argv[1], "small-cache") == 0) {
    /* before the first call: the library reads them once */
    setenv("BNORM_L2_BYTES", "4096", 1);
    setenv("BNORM_L3_BYTES", "16384", 1);
  }
  for (i = 0; i < NBUF; ++i) {
    bytes[i] = i <= DRES ? MAXN * 8 : MAXC * 8;
    buf[i] = (unsigned char *)malloc(bytes[i]);
  }

  /* the size query */
  CHECK(bnorm_workspace_size(BNORM_OP_BACKWARD, BNORM_FLOAT32, 8, 4, 9, 0, NULL) ==
        BNORM_ERROR_NULL_POINTER);
  CHECK(bnorm_workspace_size(0, BNORM_FLOAT32, 8, 4, 9, 0, &b) == BNORM_ERROR_INVALID_ARGUMENT);
  CHECK(bnorm_workspace_size(9, BNORM_FLOAT32, 8, 4, 9, 0, &b) == BNORM_ERROR_INVALID_ARGUMENT);
  CHECK(bnorm_workspace_size(1, (bnorm_dtype)99, 8, 4, 9, 0, &b) ==
        BNORM_ERROR_UNSUPPORTED_DTYPE);
  CHECK(bnorm_workspace_size(1, BNORM_FLOAT32, -1, 4, 9, 0, &b) == BNORM_ERROR_INVALID_SIZE);
  CHECK(bnorm_workspace_size(1, BNORM_FLOAT32, INT64_MAX, 4, 9, 0, &b) ==
        BNORM_ERROR_INVALID_SIZE);
  /* a shape with no values but channels near INTPTR_MAX / 8 passes the
   * element count; its workspace in bytes does not fit, for every op that
   * needs one, on one thread or many (found by the fuzzer: the size was a
   * signed overflow) */
  {
    int32_t op;
    const int64_t big = INT64_MAX / 8 - 1;
    for (op = BNORM_OP_FORWARD_TRAINING; op <= BNORM_OP_BACKWARD_FROM_OUTPUT; ++op) {
      if (op == BNORM_OP_FORWARD_INFERENCE) continue;
      b = 12345;
      CHECK(bnorm_workspace_size(op, BNORM_FLOAT64, 0, big, 1, 1, &b) ==
                BNORM_ERROR_INVALID_SIZE && b == 12345);
      CHECK(bnorm_workspace_size(op, BNORM_FLOAT32, 1, big / 4, 0, 64, &b) ==
                BNORM_ERROR_INVALID_SIZE && b == 12345);
      /* empty but representable: a size, and at least the coefficients */
      CHECK(bnorm_workspace_size(op, BNORM_FLOAT64, 0, 1 << 20, 1, 2, &b) == BNORM_OK &&
            b >= (size_t)(1 << 20) * 8 && b < ((size_t)1 << 40));
    }
  }
  b = 1;
  CHECK(bnorm_workspace_size(BNORM_OP_FORWARD_INFERENCE, BNORM_FLOAT32, 64, 40, 36, 0, &b) ==
            BNORM_OK && b == 0);
  b = 1;
  CHECK(bnorm_workspace_size(BNORM_OP_FORWARD_TRAINING, BNORM_FLOAT32, 64, 0, 36, 0, &b) ==
            BNORM_OK && b == 0);
  /* at least the per-channel coefficients; channels-last scratch grows with
   * the threads */
  CHECK(bnorm_workspace_size(BNORM_OP_BACKWARD, BNORM_FLOAT32, 64, 40, 36, 1, &b) ==
            BNORM_OK && b >= 7 * 40 * 4);
  {
    size_t one_t = 0, four_t = 0;
    CHECK(bnorm_workspace_size(BNORM_OP_MOMENTS, BNORM_FLOAT32, 64 * 36 * 40, 40, 1, 1,
                               &one_t) == BNORM_OK);
    CHECK(bnorm_workspace_size(BNORM_OP_MOMENTS, BNORM_FLOAT32, 64 * 36 * 40, 40, 1, 4,
                               &four_t) == BNORM_OK);
    CHECK(four_t >= one_t + 3 * 3 * 40 * 8);
  }

  for (i = 1; i <= 2; ++i) {
    bnorm_set_num_threads(i);
    for (d = 0; d < 4; ++d)
      for (k = 0; k < sizeof kShapes / sizeof kShapes[0]; ++k)
        for (op = BNORM_OP_FORWARD_TRAINING; op <= BNORM_OP_BACKWARD_FROM_OUTPUT; ++op) {
          if (op == BNORM_OP_FORWARD_INFERENCE) continue; /* (needs none) */
          for (v = 0; v < (op == BNORM_OP_BACKWARD || op == BNORM_OP_BACKWARD_FROM_OUTPUT
                               ? 3
                               : op == 1 ? 2 : 1);
               ++v)
            one(op, v, kDtypes[d], kShapes[k], i);
        }
  }

  /* a block sized for one thread is too small for a two-thread call of a
   * channels-last tensor (its scratch is per thread) */
  {
    const int64_t s[3] = {64 * 36, 40, 1};
    size_t one_t = 0;
    void *ws;
    bnorm_set_num_threads(2);
    CHECK(bnorm_workspace_size(BNORM_OP_MOMENTS, BNORM_FLOAT32, s[0], s[1], s[2], 1,
                               &one_t) == BNORM_OK);
    ws = malloc(one_t);
    fill(BNORM_FLOAT32, s[0] * s[1], s[1], 3);
    if (bnorm_get_num_threads() == 2) /* (a build without OpenMP runs on one) */
      CHECK(call(BNORM_OP_MOMENTS, 0, BNORM_FLOAT32, s, ws, one_t) ==
            BNORM_ERROR_WORKSPACE_TOO_SMALL);
    bnorm_set_num_threads(1);
    CHECK(call(BNORM_OP_MOMENTS, 0, BNORM_FLOAT32, s, ws, one_t) == BNORM_OK);
    free(ws);
  }

  for (i = 0; i < NBUF; ++i) free(buf[i]);
  printf("workspace: %ld _ws calls bitwise equal to allocating ones, %ld refusals\n",
         compared, refused);
  if (failures) {
    printf("%d failed\n", failures);
    return 1;
  }
  return 0;
}
