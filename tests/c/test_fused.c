/* Fused batch norm + residual + ReLU in C: the plain entry points are the
 * fused ones with no residual and no flag, bit for bit; the ReLU and the
 * residual land where they should; the backward's mask comes from y or is
 * recomputed from x; bad calls are refused with nothing written. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#define N 5
#define C 4
#define L 30
#define T (N * C * L)

static float x[T], z[T], dy[T], ya[T], yb[T], yc[T], dx0[T], dx1[T], dz[T], g[T];
static float w[C] = {1.5f, -0.5f, 2.0f, 1.0f}, b[C] = {0.1f, 0.2f, -0.3f, 0.0f};

int main(void) {
  float sm[C], si[C], sm1[C], si1[C], dw0[C], db0[C], dw1[C], db1[C];
  uint32_t s = 99u;
  int i;
  for (i = 0; i < T; ++i) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)(s >> 8) / (float)(1u << 24) * 4.0f - 2.0f;
    s = s * 1664525u + 1013904223u;
    z[i] = (float)(s >> 8) / (float)(1u << 24) - 0.5f;
    dy[i] = z[i] * 3.0f;
  }
  /* plain == fused without residual and flags */
  CHECK(bnorm_forward_training(BNORM_FLOAT32, N, C, L, x, ya, w, b, sm, si, NULL, NULL,
                               1e-5, 0, 0) == BNORM_OK);
  CHECK(bnorm_forward_training_fused(BNORM_FLOAT32, N, C, L, x, NULL, yb, w, b, sm1, si1,
                                     NULL, NULL, 1e-5, 0, 0) == BNORM_OK);
  CHECK(memcmp(ya, yb, sizeof ya) == 0 && memcmp(sm, sm1, sizeof sm) == 0);
  /* relu(BN(x) + z), and in place into z's copy */
  CHECK(bnorm_forward_training_fused(BNORM_FLOAT32, N, C, L, x, z, yb, w, b, NULL, NULL,
                                     NULL, NULL, 1e-5, 0, BNORM_FLAG_RELU) == BNORM_OK);
  memcpy(yc, z, sizeof z);
  CHECK(bnorm_forward_training_fused(BNORM_FLOAT32, N, C, L, x, yc, yc, w, b, NULL, NULL,
                                     NULL, NULL, 1e-5, 0, BNORM_FLAG_RELU) == BNORM_OK);
  for (i = 0; i < T; ++i) {
    const float v = ya[i] + z[i];
    CHECK(yb[i] == (v < 0 ? 0.0f : v));
    CHECK(yc[i] == yb[i]);
  }
  /* inference */
  CHECK(bnorm_forward_inference_fused(BNORM_FLOAT32, N, C, L, x, NULL, yc, sm, si, w, b,
                                      1e-5, BNORM_FLAG_RELU) == BNORM_OK);
  for (i = 0; i < T; ++i) CHECK(yc[i] >= 0);
  /* backward: mask from y == plain backward of the masked dy */
  for (i = 0; i < T; ++i) g[i] = yb[i] > 0 ? dy[i] : 0.0f;
  CHECK(bnorm_backward(BNORM_FLOAT32, N, C, L, g, x, sm, si, w, dx0, dw0, db0, 0) == BNORM_OK);
  CHECK(bnorm_backward_fused(BNORM_FLOAT32, N, C, L, dy, x, yb, sm, si, w, b, dx1, dw1, db1,
                             dz, BNORM_FLAG_RELU) == BNORM_OK);
  CHECK(memcmp(dx0, dx1, sizeof dx0) == 0 && memcmp(dw0, dw1, sizeof dw0) == 0 &&
        memcmp(db0, db1, sizeof db0) == 0 && memcmp(g, dz, sizeof g) == 0);
  /* the old entry points know no ReLU; the fused ones refuse unknown bits,
   * dx over dresidual, and a mask with nowhere to come from is recomputed */
  memcpy(dx1, dx0, sizeof dx0);
  CHECK(bnorm_forward_training(BNORM_FLOAT32, N, C, L, x, yc, w, b, NULL, NULL, NULL, NULL,
                               1e-5, 0, BNORM_FLAG_RELU) == BNORM_ERROR_INVALID_FLAGS);
  CHECK(bnorm_backward(BNORM_FLOAT32, N, C, L, dy, x, sm, si, w, dx1, NULL, NULL,
                       BNORM_FLAG_RELU) == BNORM_ERROR_INVALID_FLAGS);
  CHECK(bnorm_forward_inference_fused(BNORM_FLOAT32, N, C, L, x, NULL, yc, sm, si, w, b,
                                      1e-5, 1u << 7) == BNORM_ERROR_INVALID_FLAGS);
  CHECK(bnorm_backward_fused(BNORM_FLOAT32, N, C, L, dy, x, yb, sm, si, w, b, dx1, NULL,
                             NULL, dx1, BNORM_FLAG_RELU) == BNORM_ERROR_OVERLAP);
  CHECK(bnorm_backward_fused(BNORM_FLOAT32, N, C, L, dy, x, yb, sm, si, w, b, yb + 1, NULL,
                             NULL, NULL, BNORM_FLAG_RELU) == BNORM_ERROR_OVERLAP);
  CHECK(bnorm_forward_training_fused(BNORM_FLOAT32, N, C, L, x, z, z + 1, w, b, NULL, NULL,
                                     NULL, NULL, 1e-5, 0, 0) == BNORM_ERROR_OVERLAP);
  CHECK(memcmp(dx1, dx0, sizeof dx0) == 0);
  /* ReLU6: min(max(BN(x) + z, 0), 6) (a scale that reaches past 6); the
   * backward lets dy through where 0 < y < 6; RELU with RELU6 is refused */
  {
    float w6[C] = {6.0f, -5.0f, 7.0f, 4.0f};
    int lo = 0, hi = 0;
    CHECK(bnorm_forward_training(BNORM_FLOAT32, N, C, L, x, ya, w6, b, sm, si, NULL, NULL,
                                 1e-5, 0, 0) == BNORM_OK);
    CHECK(bnorm_forward_training_fused(BNORM_FLOAT32, N, C, L, x, z, yb, w6, b, NULL, NULL,
                                       NULL, NULL, 1e-5, 0, BNORM_FLAG_RELU6) == BNORM_OK);
    for (i = 0; i < T; ++i) {
      const float v = ya[i] + z[i];
      CHECK(yb[i] == (v < 0 ? 0.0f : v > 6 ? 6.0f : v));
      lo += yb[i] == 0.0f;
      hi += yb[i] == 6.0f;
      g[i] = yb[i] > 0 && yb[i] < 6 ? dy[i] : 0.0f;
    }
    CHECK(lo > 0 && hi > 0);
    CHECK(bnorm_backward(BNORM_FLOAT32, N, C, L, g, x, sm, si, w6, dx0, dw0, db0, 0) ==
          BNORM_OK);
    CHECK(bnorm_backward_fused(BNORM_FLOAT32, N, C, L, dy, x, yb, sm, si, w6, b, dx1, dw1,
                               db1, dz, BNORM_FLAG_RELU6) == BNORM_OK);
    CHECK(memcmp(dx0, dx1, sizeof dx0) == 0 && memcmp(dw0, dw1, sizeof dw0) == 0 &&
          memcmp(db0, db1, sizeof db0) == 0 && memcmp(g, dz, sizeof g) == 0);
    memcpy(yc, yb, sizeof yb);
    CHECK(bnorm_forward_training_fused(BNORM_FLOAT32, N, C, L, x, z, yc, w6, b, NULL, NULL,
                                       NULL, NULL, 1e-5, 0,
                                       BNORM_FLAG_RELU | BNORM_FLAG_RELU6) ==
          BNORM_ERROR_INVALID_FLAGS);
    CHECK(bnorm_forward_inference_fused(BNORM_FLOAT32, N, C, L, x, NULL, yc, sm, si, w6, b,
                                        1e-5, BNORM_FLAG_RELU | BNORM_FLAG_RELU6) ==
          BNORM_ERROR_INVALID_FLAGS);
    CHECK(bnorm_backward_fused(BNORM_FLOAT32, N, C, L, dy, x, yb, sm, si, w6, b, yc, NULL,
                               NULL, NULL, BNORM_FLAG_RELU | BNORM_FLAG_RELU6) ==
          BNORM_ERROR_INVALID_FLAGS);
    CHECK(bnorm_forward_training(BNORM_FLOAT32, N, C, L, x, yc, w6, b, NULL, NULL, NULL,
                                 NULL, 1e-5, 0, BNORM_FLAG_RELU6) == BNORM_ERROR_INVALID_FLAGS);
    CHECK(memcmp(yc, yb, sizeof yb) == 0);
    /* restore ya, sm, si of the first weights for the test below */
    CHECK(bnorm_forward_training(BNORM_FLOAT32, N, C, L, x, ya, w, b, sm, si, NULL, NULL,
                                 1e-5, 0, 0) == BNORM_OK);
  }
  /* BN + ReLU without a residual: the mask recomputed from x is BN(x) > 0 */
  for (i = 0; i < T; ++i) g[i] = ya[i] > 0 ? dy[i] : 0.0f;
  CHECK(bnorm_backward(BNORM_FLOAT32, N, C, L, g, x, sm, si, w, dx0, dw0, db0, 0) == BNORM_OK);
  CHECK(bnorm_backward_fused(BNORM_FLOAT32, N, C, L, dy, x, NULL, sm, si, w, b, dx1, dw1,
                             db1, NULL, BNORM_FLAG_RELU) == BNORM_OK);
  for (i = 0; i < C; ++i) {
    CHECK(fabsf(db1[i] - db0[i]) <= 1e-4f * (1 + fabsf(db0[i])));
    CHECK(fabsf(dw1[i] - dw0[i]) <= 1e-4f * (1 + fabsf(dw0[i])));
  }
  for (i = 0; i < T; ++i) CHECK(fabsf(dx1[i] - dx0[i]) <= 1e-4f * (1 + fabsf(dx0[i])));
  if (failures) {
    fprintf(stderr, "test_fused: %d failure(s)\n", failures);
    return 1;
  }
  printf("test_fused: passed\n");
  return 0;
}
