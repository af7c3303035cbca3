/* A few training steps of one batch-norm layer in C, then inference.
 *
 * The layer normalizes NCHW activations x of 3 channels; the "loss" is
 * L = sum(y * t) / m for a fixed target tensor t, so dL/dy = t / m. Each step
 * runs the training forward pass (batch statistics, running statistics),
 * the backward pass (dx, dgamma, dbeta) and an SGD update of gamma and beta.
 * Then the layer runs in inference mode on the running statistics.
 *
 * The program checks what it can check by hand (normalized outputs have
 * mean beta and std |gamma|; dbeta = sum(dy); the running mean moves toward
 * the batch mean) and exits non-zero if anything is off. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define N 4
#define C 3
#define HW 25 /* 5 x 5 */
#define SIZE (N * C * HW)

/* Stops the program with bnorm's description of a failed call. */
#define TRY(call)                                                         \
  do {                                                                    \
    bnorm_status st_ = (call);                                            \
    if (st_ != BNORM_OK) {                                                \
      fprintf(stderr, "%s failed: %s\n", #call, bnorm_status_string(st_)); \
      return 1;                                                           \
    }                                                                     \
  } while (0)

#define EXPECT(cond)                                  \
  do {                                                \
    if (!(cond)) {                                    \
      fprintf(stderr, "check failed: %s\n", #cond);  \
      return 1;                                       \
    }                                                 \
  } while (0)

int main(void) {
  static float x[SIZE], y[SIZE], t[SIZE], dy[SIZE], dx[SIZE];
  float gamma[C] = {1, 1, 1}, beta[C] = {0, 0, 0};
  float running_mean[C] = {0, 0, 0}, running_var[C] = {1, 1, 1};
  float save_mean[C], save_invstd[C], dgamma[C], dbeta[C];
  const float lr = 0.5f;
  const int m = N * HW;
  int i, c, step;
  unsigned seed = 1;

  if (bnorm_version_number() != BNORM_VERSION_NUMBER) {
    fprintf(stderr, "header %d and library %d differ\n", BNORM_VERSION_NUMBER,
            bnorm_version_number());
    return 1;
  }
  printf("bnorm %s, kernels %s, %d thread(s)\n", bnorm_version_string(),
         bnorm_kernel_isa(), bnorm_get_num_threads());

  for (i = 0; i < SIZE; ++i) {
    c = (i / HW) % C;
    seed = seed * 1103515245u + 12345u;
    x[i] = 10.0f * c + (float)((seed >> 8) % 1000) / 100.0f; /* offset per channel */
    t[i] = (i % 2) ? 1.0f : -0.5f;
    dy[i] = t[i] / m;
  }

  for (step = 0; step < 3; ++step) {
    TRY(bnorm_forward_training(BNORM_FLOAT32, N, C, HW, x, y, gamma, beta, save_mean,
                               save_invstd, running_mean, running_var,
                               1e-5, 0.1, 0));
    for (c = 0; c < C; ++c) { /* y has mean beta and std |gamma| per channel */
      double s = 0, s2 = 0;
      int o, k;
      for (o = 0; o < N; ++o)
        for (k = 0; k < HW; ++k) {
          const double v = y[(o * C + c) * HW + k];
          s += v;
          s2 += v * v;
        }
      s /= m;
      EXPECT(fabs(s - beta[c]) < 1e-4);
      EXPECT(fabs(sqrt(s2 / m - s * s) - fabs(gamma[c])) < 1e-3);
    }
    TRY(bnorm_backward(BNORM_FLOAT32, N, C, HW, dy, x, save_mean, save_invstd, gamma,
                       dx, dgamma, dbeta, 0));
    for (c = 0; c < C; ++c) {
      double sg = 0;
      int o, k;
      for (o = 0; o < N; ++o)
        for (k = 0; k < HW; ++k) sg += dy[(o * C + c) * HW + k];
      EXPECT(fabs(dbeta[c] - sg) < 1e-6);
      gamma[c] -= lr * dgamma[c];
      beta[c] -= lr * dbeta[c];
    }
    {
      double loss = 0;
      for (i = 0; i < SIZE; ++i) loss += y[i] * t[i] / m;
      printf("step %d  loss %+.5f  gamma %.4f %.4f %.4f  beta %+.4f %+.4f %+.4f\n",
             step, loss, gamma[0], gamma[1], gamma[2], beta[0], beta[1], beta[2]);
    }
  }
  /* three updates with momentum 0.1 from 0: 1 - 0.9^3 = 0.271 of the mean */
  for (c = 0; c < C; ++c)
    EXPECT(fabs(running_mean[c] - 0.271 * save_mean[c]) < 1e-3 * fabs(save_mean[c]));

  TRY(bnorm_forward_inference(BNORM_FLOAT32, N, C, HW, x, y, running_mean,
                              running_var, gamma, beta, 1e-5));
  for (i = 0; i < SIZE; ++i) {
    c = (i / HW) % C;
    EXPECT(fabs(y[i] - ((x[i] - running_mean[c]) / sqrt(running_var[c] + 1e-5) *
                            gamma[c] + beta[c])) < 1e-4);
  }
  /* Errors come back as status codes and leave the outputs alone. */
  EXPECT(bnorm_forward_inference(BNORM_FLOAT32, N, C, HW, x, y, running_mean,
                                 running_var, gamma, beta, -1.0) ==
         BNORM_ERROR_INVALID_EPS);
  printf("inference: y[0] = %.5f\nok\n", y[0]);
  return 0;
}
