/* The split phases for statistics across processes, in C against the
 * header: with one shard they give bitwise what bnorm_forward_training and
 * bnorm_backward give; shards (one empty) merged give the whole batch; every
 * bad argument returns its pinned status and writes nothing. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#define N 6
#define C 3
#define L 50
#define TOTAL (N * C * L)

static double x[TOTAL], dy[TOTAL], w[C], b[C];

static void fill(void) {
  uint32_t s = 12345u;
  int i;
  for (i = 0; i < TOTAL; ++i) {
    s = s * 1664525u + 1013904223u;
    x[i] = 1e4 + (double)(s >> 8) / (double)(1u << 24);
    s = s * 1664525u + 1013904223u;
    dy[i] = (double)(s >> 8) / (double)(1u << 24) - 0.5;
  }
  for (i = 0; i < C; ++i) {
    w[i] = 0.5 + i;
    b[i] = 0.25 * i;
  }
}

static void one_shard_is_the_fused_op(void) {
  double y1[TOTAL], y2[TOTAL], sm1[C], si1[C], sm2[C], si2[C];
  double rm1[C] = {0, 0, 0}, rv1[C] = {1, 1, 1}, rm2[C] = {0, 0, 0}, rv2[C] = {1, 1, 1};
  double mean[C], m2[C], gmean[C], gm2[C], s1[C], s2[C];
  double dx1[TOTAL], dx2[TOTAL], dw1[C], db1[C], dw2[C], db2[C];
  int64_t count = -1, n = N * L;
  CHECK(bnorm_forward_training(BNORM_FLOAT64, N, C, L, x, y1, w, b, sm1, si1, rm1, rv1,
                               1e-5, 0.1, 0) == BNORM_OK);
  CHECK(bnorm_moments(BNORM_FLOAT64, N, C, L, x, mean, m2) == BNORM_OK);
  CHECK(bnorm_merge_moments(1, C, &n, mean, m2, &count, gmean, gm2) == BNORM_OK);
  CHECK(count == N * L);
  CHECK(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, y2, count, gmean, gm2, w, b,
                                sm2, si2, rm2, rv2, 1e-5, 0.1, 0) == BNORM_OK);
  CHECK(memcmp(y1, y2, sizeof y1) == 0);
  CHECK(memcmp(sm1, sm2, sizeof sm1) == 0 && memcmp(si1, si2, sizeof si1) == 0);
  CHECK(memcmp(rm1, rm2, sizeof rm1) == 0 && memcmp(rv1, rv2, sizeof rv1) == 0);
  CHECK(bnorm_backward(BNORM_FLOAT64, N, C, L, dy, x, sm1, si1, w, dx1, dw1, db1, 0) ==
        BNORM_OK);
  CHECK(bnorm_backward_reduce(BNORM_FLOAT64, N, C, L, dy, x, sm2, s1, s2) == BNORM_OK);
  CHECK(bnorm_backward_apply(BNORM_FLOAT64, N, C, L, dy, x, sm2, si2, w, s1, s2, count,
                             dx2, dw2, db2) == BNORM_OK);
  CHECK(memcmp(dx1, dx2, sizeof dx1) == 0);
  CHECK(memcmp(dw1, dw2, sizeof dw1) == 0 && memcmp(db1, db2, sizeof db1) == 0);
}

/* Shards of 2, 0 and 4 samples (NCL layout: a shard is a run of samples). */
static void shards_give_the_whole_batch(void) {
  const int64_t rows[3] = {2, 0, 4};
  int64_t counts[3];
  double means[3 * C], m2s[3 * C], gmean[C], gm2[C], sm[C], si[C];
  double y[TOTAL], yref[TOTAL], smr[C], sir[C], sums[3][2][C], tot[2][C];
  double dx[TOTAL], dxref[TOTAL], dw[C], db[C], dwr[C], dbr[C];
  int64_t count, start = 0;
  int k, c, i;
  for (k = 0; k < 3; ++k) {
    counts[k] = rows[k] * L;
    CHECK(bnorm_moments(BNORM_FLOAT64, rows[k], C, L, x + start * C * L, means + k * C,
                        m2s + k * C) == BNORM_OK);
    start += rows[k];
  }
  CHECK(means[C] == 0 && m2s[C] == 0); /* the empty shard */
  CHECK(bnorm_merge_moments(3, C, counts, means, m2s, &count, gmean, gm2) == BNORM_OK);
  CHECK(count == N * L);
  CHECK(bnorm_forward_training(BNORM_FLOAT64, N, C, L, x, yref, w, b, smr, sir, NULL, NULL,
                               1e-5, 0, 0) == BNORM_OK);
  CHECK(bnorm_backward(BNORM_FLOAT64, N, C, L, dy, x, smr, sir, w, dxref, dwr, dbr, 0) ==
        BNORM_OK);
  for (start = 0, k = 0; k < 3; start += rows[k], ++k) {
    const int64_t off = start * C * L;
    CHECK(bnorm_forward_normalize(BNORM_FLOAT64, rows[k], C, L, x + off, y + off, count,
                                  gmean, gm2, w, b, sm, si, NULL, NULL, 1e-5, 0, 0) ==
          BNORM_OK);
    CHECK(bnorm_backward_reduce(BNORM_FLOAT64, rows[k], C, L, dy + off, x + off, sm,
                                sums[k][0], sums[k][1]) == BNORM_OK);
  }
  for (c = 0; c < C; ++c) {
    tot[0][c] = sums[0][0][c] + sums[1][0][c] + sums[2][0][c];
    tot[1][c] = sums[0][1][c] + sums[1][1][c] + sums[2][1][c];
  }
  for (start = 0, k = 0; k < 3; start += rows[k], ++k) {
    const int64_t off = start * C * L;
    CHECK(bnorm_backward_apply(BNORM_FLOAT64, rows[k], C, L, dy + off, x + off, sm, si, w,
                               tot[0], tot[1], count, dx + off, dw, db) == BNORM_OK);
  }
  for (i = 0; i < TOTAL; ++i) {
    CHECK(fabs(y[i] - yref[i]) <= 1e-11);
    CHECK(fabs(dx[i] - dxref[i]) <= 1e-11);
  }
  for (c = 0; c < C; ++c) {
    CHECK(fabs(dw[c] - dwr[c]) <= 1e-9 * (1 + fabs(dwr[c])));
    CHECK(fabs(db[c] - dbr[c]) <= 1e-9 * (1 + fabs(dbr[c])));
  }
}

/* A bad call returns `want` and leaves the outputs as they were. */
static double out_a[TOTAL], out_b[C], out_c[C];
static int64_t out_n;
static void poison(void) {
  memset(out_a, 0x5A, sizeof out_a);
  memset(out_b, 0x5A, sizeof out_b);
  memset(out_c, 0x5A, sizeof out_c);
  memset(&out_n, 0x5A, sizeof out_n);
}
static int untouched(void) {
  unsigned char ref[sizeof out_a];
  memset(ref, 0x5A, sizeof ref);
  return memcmp(out_a, ref, sizeof out_a) == 0 && memcmp(out_b, ref, sizeof out_b) == 0 &&
         memcmp(out_c, ref, sizeof out_c) == 0 && memcmp(&out_n, ref, sizeof out_n) == 0;
}
static int tried = 0;
#define BAD(call, want)                                                   \
  do {                                                                    \
    bnorm_status st_;                                                     \
    poison();                                                             \
    st_ = (call);                                                         \
    ++tried;                                                              \
    if (st_ != (want) || !untouched()) {                                  \
      fprintf(stderr, "%s:%d: %s gave %d (want %d)%s\n", __FILE__, __LINE__, #call, \
              st_, want, untouched() ? "" : ", and wrote");               \
      ++failures;                                                         \
    }                                                                     \
  } while (0)

static void bad_arguments(void) {
  double mean[C] = {1, 2, 3}, m2[C] = {4, 5, 6}, rm[C] = {0}, rv[C] = {1, 1, 1};
  int64_t counts[2] = {3, 4}, huge[2] = {INT64_MAX, 1}, neg[2] = {3, -1};
  const int64_t n = N * L;
  /* moments */
  BAD(bnorm_moments(7, N, C, L, x, out_b, out_c), BNORM_ERROR_UNSUPPORTED_DTYPE);
  BAD(bnorm_moments(BNORM_FLOAT64, -1, C, L, x, out_b, out_c), BNORM_ERROR_INVALID_SIZE);
  BAD(bnorm_moments(BNORM_FLOAT64, INT64_MAX, C, L, x, out_b, out_c), BNORM_ERROR_INVALID_SIZE);
  BAD(bnorm_moments(BNORM_FLOAT64, N, C, L, NULL, out_b, out_c), BNORM_ERROR_NULL_POINTER);
  BAD(bnorm_moments(BNORM_FLOAT64, N, C, L, x, NULL, out_c), BNORM_ERROR_NULL_POINTER);
  BAD(bnorm_moments(BNORM_FLOAT64, N, C, L, x, out_b, out_b), BNORM_ERROR_OVERLAP);
  /* merge */
  BAD(bnorm_merge_moments(-1, C, counts, mean, m2, &out_n, out_b, out_c), BNORM_ERROR_INVALID_SIZE);
  BAD(bnorm_merge_moments(2, -3, counts, mean, m2, &out_n, out_b, out_c), BNORM_ERROR_INVALID_SIZE);
  BAD(bnorm_merge_moments(INT64_MAX, C, counts, mean, m2, &out_n, out_b, out_c), BNORM_ERROR_INVALID_SIZE);
  BAD(bnorm_merge_moments(1, C, NULL, mean, m2, &out_n, out_b, out_c), BNORM_ERROR_NULL_POINTER);
  BAD(bnorm_merge_moments(1, C, counts, mean, m2, NULL, out_b, out_c), BNORM_ERROR_NULL_POINTER);
  BAD(bnorm_merge_moments(2, 1, neg, mean, m2, &out_n, out_b, out_c), BNORM_ERROR_INVALID_ARGUMENT);
  BAD(bnorm_merge_moments(2, 1, huge, mean, m2, &out_n, out_b, out_c), BNORM_ERROR_INVALID_ARGUMENT);
  BAD(bnorm_merge_moments(1, C, counts, mean, m2, &out_n, out_b, out_b), BNORM_ERROR_OVERLAP);
  /* normalize */
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, n, mean, m2, w, b, out_b, out_c,
                              NULL, NULL, 1e-5, 0.1, 0x10), BNORM_ERROR_INVALID_FLAGS);
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, n, mean, m2, w, b, out_b, out_c,
                              NULL, NULL, 0.0, 0.1, 0), BNORM_ERROR_INVALID_EPS);
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, n, mean, m2, w, b, out_b, out_c,
                              rm, rv, 1e-5, NAN, 0), BNORM_ERROR_INVALID_MOMENTUM);
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, n, mean, m2, w, b, out_b, out_c,
                              rm, NULL, 1e-5, 0.1, 0), BNORM_ERROR_INVALID_ARGUMENT);
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, 1, mean, m2, w, b, out_b, out_c,
                              NULL, NULL, 1e-5, 0.1, 0), BNORM_ERROR_TOO_FEW_VALUES);
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, n - 1, mean, m2, w, b, out_b,
                              out_c, NULL, NULL, 1e-5, 0.1, 0), BNORM_ERROR_INVALID_ARGUMENT);
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, n, NULL, m2, w, b, out_b, out_c,
                              NULL, NULL, 1e-5, 0.1, 0), BNORM_ERROR_NULL_POINTER);
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, n, mean, m2, w, b, out_b, out_b,
                              NULL, NULL, 1e-5, 0.1, 0), BNORM_ERROR_OVERLAP);
  BAD(bnorm_forward_normalize(BNORM_FLOAT64, N, C, L, x, out_a, n, mean, m2, w, b, out_a + 1,
                              out_c, NULL, NULL, 1e-5, 0.1, 0), BNORM_ERROR_OVERLAP);
  /* backward phases */
  BAD(bnorm_backward_reduce(BNORM_FLOAT64, N, C, L, NULL, x, mean, out_b, out_c), BNORM_ERROR_NULL_POINTER);
  BAD(bnorm_backward_reduce(BNORM_FLOAT64, N, -C, L, dy, x, mean, out_b, out_c), BNORM_ERROR_INVALID_SIZE);
  BAD(bnorm_backward_reduce(BNORM_FLOAT64, N, C, L, dy, x, mean, out_b, out_b), BNORM_ERROR_OVERLAP);
  BAD(bnorm_backward_reduce(7, N, C, L, dy, x, mean, out_b, out_c), BNORM_ERROR_UNSUPPORTED_DTYPE);
  BAD(bnorm_backward_apply(BNORM_FLOAT64, N, C, L, dy, x, mean, m2, w, mean, m2, 1, out_a,
                           out_b, out_c), BNORM_ERROR_TOO_FEW_VALUES);
  BAD(bnorm_backward_apply(BNORM_FLOAT64, N, C, L, dy, x, mean, m2, w, mean, m2, n - 1, out_a,
                           out_b, out_c), BNORM_ERROR_INVALID_ARGUMENT);
  BAD(bnorm_backward_apply(BNORM_FLOAT64, N, C, L, dy, x, mean, m2, w, NULL, m2, n, out_a,
                           out_b, out_c), BNORM_ERROR_NULL_POINTER);
  BAD(bnorm_backward_apply(BNORM_FLOAT64, N, C, L, dy, x, mean, m2, w, mean, m2, n, out_a,
                           out_b, out_b), BNORM_ERROR_OVERLAP);
  BAD(bnorm_backward_apply(BNORM_FLOAT64, N, C, L, dy, x, mean, m2, w, mean, m2, n,
                           (double *)dy + 1, out_b, out_c), BNORM_ERROR_OVERLAP);
}

int main(void) {
  fill();
  one_shard_is_the_fused_op();
  shards_give_the_whole_batch();
  bad_arguments();
  if (failures) {
    fprintf(stderr, "test_distributed: %d failure(s)\n", failures);
    return 1;
  }
  printf("test_distributed: split phases equal the fused ops; %d bad calls refused, "
         "nothing written\n", tried);
  return 0;
}
