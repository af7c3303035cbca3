/* Normalizes two channels and checks the result: prints "ok" and the
 * library version, or fails with a non-zero exit code. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdio.h>

int main(void) {
  float x[8] = {1, 2, 3, 4, 10, 20, 30, 40}; /* [outer=1, C=2, inner=4] */
  float y[8], mean[2], invstd[2];
  bnorm_status st = bnorm_forward_training(BNORM_FLOAT32, 1, 2, 4, x, y, NULL,
                                           NULL, mean, invstd, NULL, NULL,
                                           1e-5, 0.1, 0);
  if (st != BNORM_OK) {
    fprintf(stderr, "bnorm: %s\n", bnorm_status_string(st));
    return 1;
  }
  if (fabsf(mean[0] - 2.5f) > 1e-6f || fabsf(mean[1] - 25.0f) > 1e-5f ||
      fabsf(y[0] + y[3]) > 1e-6f || fabsf(y[4] - y[0]) > 1e-5f) {
    fprintf(stderr, "wrong result\n");
    return 1;
  }
  if (bnorm_version_number() != BNORM_VERSION_NUMBER) {
    fprintf(stderr, "header/library version mismatch\n");
    return 1;
  }
  printf("ok %s\n", bnorm_version_string());
  return 0;
}
