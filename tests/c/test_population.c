/* Population statistics in C: Algorithm 2's formulas on exact numbers,
 * batches of unequal size, merging, a million batches far from zero, and
 * every bad argument refused with nothing written. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

int main(void) {
  double st[BNORM_POPULATION_STATE_SIZE(2)], other[BNORM_POPULATION_STATE_SIZE(2)];
  double mean[2], var[2], before[BNORM_POPULATION_STATE_SIZE(2)];
  int64_t batches = -1, values = -1;
  /* two batches of m = 4: means (1, 10), (3, 20); biased variances (2, 1), (4, 3) */
  const double mu1[2] = {1, 10}, q1[2] = {8, 4}, mu2[2] = {3, 20}, q2[2] = {16, 12};
  int i;

  CHECK(bnorm_population_init(2, st) == BNORM_OK);
  CHECK(bnorm_population_result(2, st, &batches, &values, mean, var) == BNORM_OK);
  CHECK(batches == 0 && values == 0 && mean[0] == 0 && var[1] == 1);
  CHECK(bnorm_population_add(2, st, 4, mu1, q1) == BNORM_OK);
  CHECK(bnorm_population_add(2, st, 4, mu2, q2) == BNORM_OK);
  CHECK(bnorm_population_result(2, st, &batches, &values, mean, var) == BNORM_OK);
  /* E[mu] = (2, 15); m/(m-1) E[var] = 4/3 * (3, 2) = (4, 8/3) */
  CHECK(batches == 2 && values == 8);
  CHECK(mean[0] == 2 && mean[1] == 15);
  CHECK(fabs(var[0] - 4.0) < 1e-15 && fabs(var[1] - 8.0 / 3) < 1e-15);

  /* unequal sizes: a batch of m = 2 weighs half a batch of m = 4 */
  CHECK(bnorm_population_init(2, other) == BNORM_OK);
  CHECK(bnorm_population_add(2, other, 2, mu1, q1) == BNORM_OK);
  CHECK(bnorm_population_merge(2, st, other) == BNORM_OK);
  CHECK(bnorm_population_result(2, st, &batches, &values, mean, NULL) == BNORM_OK);
  CHECK(batches == 3 && values == 10);
  CHECK(fabs(mean[0] - (4 * 1 + 4 * 3 + 2 * 1) / 10.0) < 1e-15);

  /* a million batches at 1e9: exact integers in, exact mean out */
  {
    double big[BNORM_POPULATION_STATE_SIZE(1)];
    double mu, q = 3, m1;
    long k;
    CHECK(bnorm_population_init(1, big) == BNORM_OK);
    for (k = 0; k < 1000000; ++k) {
      mu = 1e9 + (double)(k % 7) - 3; /* deviations -3..3 */
      bnorm_population_add(1, big, 4, &mu, &q);
    }
    CHECK(bnorm_population_result(1, big, &batches, &values, &m1, var) == BNORM_OK);
    /* 142857 whole cycles of the deviations add to 0; the last k (k % 7 == 0)
     * leaves -3: the mean is 1e9 - 3e-6, which naive sums would lose */
    CHECK(batches == 1000000 && values == 4000000);
    CHECK(m1 == 1e9 + (double)(0 - 3) / 1e6);
    CHECK(fabs(var[0] - 1.0) < 1e-15);
  }

  /* bad calls: pinned statuses, the state untouched */
  bnorm_population_init(2, st);
  bnorm_population_add(2, st, 4, mu1, q1);
  memcpy(before, st, sizeof st);
  CHECK(bnorm_population_init(-1, st) == BNORM_ERROR_INVALID_SIZE);
  CHECK(bnorm_population_init(INT64_MAX, st) == BNORM_ERROR_INVALID_SIZE);
  CHECK(bnorm_population_init(2, NULL) == BNORM_ERROR_NULL_POINTER);
  CHECK(bnorm_population_add(2, st, 1, mu1, q1) == BNORM_ERROR_TOO_FEW_VALUES);
  CHECK(bnorm_population_add(2, st, 4, NULL, q1) == BNORM_ERROR_NULL_POINTER);
  CHECK(bnorm_population_add(3, st, 4, mu1, q1) == BNORM_ERROR_INVALID_ARGUMENT);
  CHECK(bnorm_population_add(2, st, 4, st + 3, q1) == BNORM_ERROR_OVERLAP);
  CHECK(bnorm_population_merge(2, st, st) == BNORM_ERROR_OVERLAP);
  for (i = 0; i < BNORM_POPULATION_STATE_SIZE(2); ++i) other[i] = 0;
  CHECK(bnorm_population_merge(2, st, other) == BNORM_ERROR_INVALID_ARGUMENT);
  CHECK(bnorm_population_result(2, other, NULL, NULL, mean, var) == BNORM_ERROR_INVALID_ARGUMENT);
  CHECK(bnorm_population_result(2, st, NULL, NULL, st + 1, var) == BNORM_ERROR_OVERLAP);
  CHECK(memcmp(before, st, sizeof st) == 0);

  if (failures) {
    fprintf(stderr, "test_population: %d failure(s)\n", failures);
    return 1;
  }
  printf("test_population: passed\n");
  return 0;
}
