/* C tests of the C API, written against the public header only: results on
 * a small case computed by hand-written loops here, and every status code. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                 \
      ++failures;                                                     \
    }                                                                 \
  } while (0)
#define CHECK_STATUS(expr, want) CHECK((expr) == (want))

/* x: [outer=2, channels=3, inner=4] */
enum { OUTER = 2, CH = 3, INNER = 4, N = OUTER * CH * INNER };

static void fill(double *x) {
  int i;
  for (i = 0; i < N; ++i) x[i] = sin(0.7 * i) * (1 + i % 3) + 0.1 * i;
}

static void naive_stats(const double *x, double *mean, double *var) {
  int c, o, i;
  for (c = 0; c < CH; ++c) {
    double s = 0, q = 0;
    for (o = 0; o < OUTER; ++o)
      for (i = 0; i < INNER; ++i) s += x[(o * CH + c) * INNER + i];
    mean[c] = s / (OUTER * INNER);
    for (o = 0; o < OUTER; ++o)
      for (i = 0; i < INNER; ++i) {
        double d = x[(o * CH + c) * INNER + i] - mean[c];
        q += d * d;
      }
    var[c] = q / (OUTER * INNER);
  }
}

static void test_version(void) {
  char want[32];
  sprintf(want, "%d.%d.%d", BNORM_VERSION_MAJOR, BNORM_VERSION_MINOR,
          BNORM_VERSION_PATCH);
  CHECK(bnorm_version_number() == BNORM_VERSION_NUMBER);
  CHECK(strcmp(bnorm_version_string(), want) == 0);
}

static void test_status_strings(void) {
  int s;
  for (s = 0; s <= BNORM_ERROR_WORKSPACE_TOO_SMALL; ++s) {
    const char *msg = bnorm_status_string(s);
    CHECK(msg != NULL && strlen(msg) > 0);
    CHECK(strstr(msg, "unknown bnorm status") == NULL);
  }
  CHECK(strstr(bnorm_status_string(-1), "unknown") != NULL);
  CHECK(strstr(bnorm_status_string(9999), "unknown") != NULL);
}

static void test_training_forward(void) {
  double x[N], y[N], mean[CH], var[CH], sm[CH], si[CH];
  double w[CH] = {1.5, -2.0, 0.5}, b[CH] = {0.1, 0.2, -0.3};
  double rm[CH] = {0, 0, 0}, rv[CH] = {1, 1, 1};
  int c, o, i;
  fill(x);
  naive_stats(x, mean, var);
  CHECK_STATUS(bnorm_forward_training(BNORM_FLOAT64, OUTER, CH, INNER, x, y, w,
                                      b, sm, si, rm, rv, 1e-5, 0.1, 0),
               BNORM_OK);
  for (c = 0; c < CH; ++c) {
    double is = 1 / sqrt(var[c] + 1e-5);
    CHECK(fabs(sm[c] - mean[c]) < 1e-14);
    CHECK(fabs(si[c] - is) < 1e-12 * is);
    CHECK(fabs(rm[c] - 0.1 * mean[c]) < 1e-14);
    CHECK(fabs(rv[c] - (0.9 + 0.1 * var[c] * 8.0 / 7.0)) < 1e-14);
    for (o = 0; o < OUTER; ++o)
      for (i = 0; i < INNER; ++i) {
        int k = (o * CH + c) * INNER + i;
        double want = (x[k] - mean[c]) * is * w[c] + b[c];
        CHECK(fabs(y[k] - want) < 1e-12);
      }
  }
  /* float32 and in place, no optional outputs */
  {
    float xf[N], yf[N];
    for (i = 0; i < N; ++i) xf[i] = (float)x[i];
    memcpy(yf, xf, sizeof xf);
    CHECK_STATUS(bnorm_forward_training(BNORM_FLOAT32, OUTER, CH, INNER, yf,
                                        yf, NULL, NULL, NULL, NULL, NULL, NULL,
                                        1e-5, 0.1, 0),
                 BNORM_OK);
    for (c = 0; c < CH; ++c)
      for (o = 0; o < OUTER; ++o)
        for (i = 0; i < INNER; ++i) {
          int k = (o * CH + c) * INNER + i;
          double want = (x[k] - mean[c]) / sqrt(var[c] + 1e-5);
          CHECK(fabs(yf[k] - want) < 1e-5);
        }
  }
}

static void test_inference_and_backward(void) {
  double x[N], y[N], dy[N], dx[N], mean[CH], var[CH], is[CH], dw[CH], db[CH];
  double w[CH] = {1.5, -2.0, 0.5}, b[CH] = {0.1, 0.2, -0.3};
  int c, o, i;
  fill(x);
  naive_stats(x, mean, var);
  for (c = 0; c < CH; ++c) is[c] = 1 / sqrt(var[c] + 1e-3);
  CHECK_STATUS(bnorm_forward_inference(BNORM_FLOAT64, OUTER, CH, INNER, x, y,
                                       mean, var, w, b, 1e-3),
               BNORM_OK);
  for (i = 0; i < N; ++i) dy[i] = cos(1.3 * i);
  CHECK_STATUS(bnorm_backward(BNORM_FLOAT64, OUTER, CH, INNER, dy, x, mean, is,
                              w, dx, dw, db, 0),
               BNORM_OK);
  for (c = 0; c < CH; ++c) {
    double sg = 0, sgx = 0;
    for (o = 0; o < OUTER; ++o)
      for (i = 0; i < INNER; ++i) {
        int k = (o * CH + c) * INNER + i;
        CHECK(fabs(y[k] - ((x[k] - mean[c]) * is[c] * w[c] + b[c])) < 1e-12);
        sg += dy[k];
        sgx += dy[k] * (x[k] - mean[c]) * is[c];
      }
    CHECK(fabs(db[c] - sg) < 1e-12);
    CHECK(fabs(dw[c] - sgx) < 1e-12);
    for (o = 0; o < OUTER; ++o)
      for (i = 0; i < INNER; ++i) {
        int k = (o * CH + c) * INNER + i;
        double xh = (x[k] - mean[c]) * is[c];
        double want = w[c] * is[c] * (dy[k] - sg / 8 - xh * sgx / 8);
        CHECK(fabs(dx[k] - want) < 1e-12);
      }
  }
  CHECK_STATUS(bnorm_backward(BNORM_FLOAT64, OUTER, CH, INNER, dy, x, mean, is,
                              w, dx, NULL, NULL, BNORM_FLAG_FROZEN_STATS),
               BNORM_OK);
  for (i = 0; i < N; ++i) {
    c = (i / INNER) % CH;
    CHECK(fabs(dx[i] - dy[i] * w[c] * is[c]) < 1e-14);
  }
}

/* Every error leaves the output buffers untouched. */
static void test_errors(void) {
  double x[N], y[N], sm[CH], rm[CH] = {0, 0, 0}, rv[CH] = {1, 1, 1};
  double is[CH] = {1, 1, 1}, dx[N];
  const double sentinel = 12345.0;
  int i;
  fill(x);
  for (i = 0; i < N; ++i) y[i] = dx[i] = sentinel;
  for (i = 0; i < CH; ++i) sm[i] = sentinel;

#define TRAIN(dt, o, c, in, xx, yy, eps, mom, fl)                            \
  bnorm_forward_training(dt, o, c, in, xx, yy, NULL, NULL, sm, NULL, rm, rv, \
                         eps, mom, fl)
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, NULL, y, 1e-5, 0.1, 0),
               BNORM_ERROR_NULL_POINTER);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, NULL, 1e-5, 0.1, 0),
               BNORM_ERROR_NULL_POINTER);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, -1, CH, INNER, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_INVALID_SIZE);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, -3, INNER, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_INVALID_SIZE);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, INT64_MAX / 2, CH, 4, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_INVALID_SIZE);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, (int64_t)1 << 40, 1 << 20, 1, x, y, 1e-5,
                     0.1, 0),
               BNORM_ERROR_INVALID_SIZE);
  CHECK_STATUS(TRAIN(0, OUTER, CH, INNER, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_UNSUPPORTED_DTYPE);
  CHECK_STATUS(TRAIN(BNORM_BFLOAT16 + 1, OUTER, CH, INNER, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_UNSUPPORTED_DTYPE);
  CHECK_STATUS(TRAIN(99, OUTER, CH, INNER, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_UNSUPPORTED_DTYPE);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, y, 0.0, 0.1, 0),
               BNORM_ERROR_INVALID_EPS);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, y, -1e-5, 0.1, 0),
               BNORM_ERROR_INVALID_EPS);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, y, NAN, 0.1, 0),
               BNORM_ERROR_INVALID_EPS);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, y, INFINITY, 0.1, 0),
               BNORM_ERROR_INVALID_EPS);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, y, 1e-5, 1.5, 0),
               BNORM_ERROR_INVALID_MOMENTUM);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, y, 1e-5, -0.1, 0),
               BNORM_ERROR_INVALID_MOMENTUM);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, y, 1e-5, NAN, 0),
               BNORM_ERROR_INVALID_MOMENTUM);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, 1, CH, 1, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_TOO_FEW_VALUES);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, 0, CH, INNER, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_TOO_FEW_VALUES);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, 0, INNER, x, y, 1e-5, 0.1, 0),
               BNORM_ERROR_TOO_FEW_VALUES);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, y, 1e-5, 0.1, 1u << 7),
               BNORM_ERROR_INVALID_FLAGS);
  CHECK_STATUS(TRAIN(BNORM_FLOAT64, OUTER, CH, INNER, x, x + 1, 1e-5, 0.1, 0),
               BNORM_ERROR_OVERLAP);
  CHECK_STATUS(bnorm_forward_training(BNORM_FLOAT64, OUTER, CH, INNER, x, y,
                                      NULL, NULL, y + 2, NULL, NULL, NULL, 1e-5,
                                      0.1, 0),
               BNORM_ERROR_OVERLAP);
  CHECK_STATUS(bnorm_forward_training(BNORM_FLOAT64, OUTER, CH, INNER, x, y,
                                      NULL, NULL, NULL, NULL, rm, NULL, 1e-5,
                                      0.1, 0),
               BNORM_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(bnorm_forward_inference(BNORM_FLOAT64, OUTER, CH, INNER, x, y,
                                       NULL, rv, NULL, NULL, 1e-5),
               BNORM_ERROR_NULL_POINTER);
  CHECK_STATUS(bnorm_forward_inference(BNORM_FLOAT64, OUTER, CH, INNER, x, y,
                                       rm, rv, NULL, NULL, 0.0),
               BNORM_ERROR_INVALID_EPS);
  CHECK_STATUS(bnorm_forward_inference(BNORM_FLOAT64, OUTER, CH, INNER, x, y,
                                       rm, y, NULL, NULL, 1e-5),
               BNORM_ERROR_OVERLAP);
  CHECK_STATUS(bnorm_forward_inference(BNORM_FLOAT32, -2, CH, INNER, x, y, rm,
                                       rv, NULL, NULL, 1e-5),
               BNORM_ERROR_INVALID_SIZE);
  CHECK_STATUS(bnorm_backward(BNORM_FLOAT64, OUTER, CH, INNER, x, x, rm, NULL,
                              NULL, dx, NULL, NULL, 0),
               BNORM_ERROR_NULL_POINTER);
  CHECK_STATUS(bnorm_backward(BNORM_FLOAT64, OUTER, CH, INNER, x, x, rm, is,
                              NULL, dx, NULL, NULL, 1u << 5),
               BNORM_ERROR_INVALID_FLAGS);
  CHECK_STATUS(bnorm_backward(BNORM_FLOAT64, 1, CH, 1, x, x, rm, is, NULL, dx,
                              NULL, NULL, 0),
               BNORM_ERROR_TOO_FEW_VALUES);
  CHECK_STATUS(bnorm_backward(BNORM_FLOAT64, OUTER, CH, INNER, x, y, rm, is,
                              NULL, x + 1, NULL, NULL, 0),
               BNORM_ERROR_OVERLAP);
  CHECK_STATUS(bnorm_backward(BNORM_FLOAT64, OUTER, CH, INNER, x, y, rm, is,
                              NULL, dx, dx + 1, NULL, 0),
               BNORM_ERROR_OVERLAP);
#undef TRAIN
  for (i = 0; i < N; ++i) {
    CHECK(y[i] == sentinel);
    CHECK(dx[i] == sentinel);
  }
  for (i = 0; i < CH; ++i) {
    CHECK(sm[i] == sentinel);
    CHECK(rm[i] == 0 && rv[i] == 1);
  }
  /* empty input: fine for inference, and for frozen backward */
  CHECK_STATUS(bnorm_forward_inference(BNORM_FLOAT64, 0, CH, INNER, x, y, rm,
                                       rv, NULL, NULL, 1e-5),
               BNORM_OK);
  {
    double dw[CH] = {7, 7, 7};
    CHECK_STATUS(bnorm_backward(BNORM_FLOAT64, 0, CH, INNER, x, x, rm, is,
                                NULL, dx, dw, NULL, BNORM_FLAG_FROZEN_STATS),
                 BNORM_OK);
    CHECK(dw[0] == 0 && dw[1] == 0 && dw[2] == 0);
  }
}

static void test_inference_helpers(void) {
  const double mean[3] = {1.0, -2.0, 0.5}, var[3] = {4.0, 0.25, 1.0};
  const double w[3] = {2.0, -1.0, 0.5}, b[3] = {0.1, 0.2, 0.3};
  double scale[3], shift[3], copy[3];
  /* layer: linear [out = 3, in = 2] */
  double lw[6] = {1, 2, 3, 4, 5, 6}, lb[3] = {0.5, -0.5, 1.5};
  double fw[6], fb[3];
  int c, i;
  CHECK_STATUS(bnorm_inference_scale_shift(BNORM_FLOAT64, 3, mean, var, w, b, 1e-5,
                                           scale, shift), BNORM_OK);
  for (c = 0; c < 3; ++c) {
    const double a = w[c] / sqrt(var[c] + 1e-5);
    CHECK(fabs(scale[c] - a) <= 1e-15 * fabs(a));
    CHECK(fabs(shift[c] - (b[c] - mean[c] * a)) <= 1e-15);
  }
  /* in place: scale over var, shift over mean */
  {
    double m2[3], v2[3];
    memcpy(m2, mean, sizeof m2);
    memcpy(v2, var, sizeof v2);
    CHECK_STATUS(bnorm_inference_scale_shift(BNORM_FLOAT64, 3, m2, v2, w, b, 1e-5,
                                             v2, m2), BNORM_OK);
    CHECK(memcmp(v2, scale, sizeof v2) == 0 && memcmp(m2, shift, sizeof m2) == 0);
  }
  /* errors leave the outputs alone */
  memcpy(copy, scale, sizeof copy);
  CHECK_STATUS(bnorm_inference_scale_shift(BNORM_FLOAT64, 3, NULL, var, w, b, 1e-5,
                                           scale, shift), BNORM_ERROR_NULL_POINTER);
  CHECK_STATUS(bnorm_inference_scale_shift(BNORM_FLOAT64, 3, mean, var, w, b, 0.0,
                                           scale, shift), BNORM_ERROR_INVALID_EPS);
  CHECK_STATUS(bnorm_inference_scale_shift(BNORM_FLOAT64, -1, mean, var, w, b, 1e-5,
                                           scale, shift), BNORM_ERROR_INVALID_SIZE);
  CHECK_STATUS(bnorm_inference_scale_shift(7, 3, mean, var, w, b, 1e-5, scale, shift),
               BNORM_ERROR_UNSUPPORTED_DTYPE);
  CHECK_STATUS(bnorm_inference_scale_shift(BNORM_FLOAT64, 3, mean, var, w, b, 1e-5,
                                           scale, scale + 1), BNORM_ERROR_OVERLAP);
  CHECK(memcmp(copy, scale, sizeof copy) == 0);

  CHECK_STATUS(bnorm_fold_into_layer(BNORM_FLOAT64, 1, 3, 2, lw, lb, mean, var, w, b,
                                     1e-5, fw, fb), BNORM_OK);
  for (c = 0; c < 3; ++c) {
    const double a = w[c] / sqrt(var[c] + 1e-5);
    for (i = 0; i < 2; ++i) CHECK(fabs(fw[c * 2 + i] - lw[c * 2 + i] * a) <= 1e-15 * fabs(lw[c * 2 + i] * a));
    CHECK(fabs(fb[c] - ((lb[c] - mean[c]) * a + b[c])) <= 1e-14);
    /* the folded layer gives the layer followed by the batch norm */
    {
      const double in[2] = {0.7, -1.3};
      const double h = lw[c * 2] * in[0] + lw[c * 2 + 1] * in[1] + lb[c];
      const double want = (h - mean[c]) * a + b[c];
      const double got = fw[c * 2] * in[0] + fw[c * 2 + 1] * in[1] + fb[c];
      CHECK(fabs(got - want) <= 1e-13);
    }
  }
  /* in place, and without a layer bias */
  {
    double w2[6], b2[3];
    memcpy(w2, lw, sizeof w2);
    CHECK_STATUS(bnorm_fold_into_layer(BNORM_FLOAT64, 1, 3, 2, w2, NULL, mean, var, w,
                                       b, 1e-5, w2, b2), BNORM_OK);
    CHECK(memcmp(w2, fw, sizeof w2) == 0);
    for (c = 0; c < 3; ++c)
      CHECK(fabs(b2[c] - (-mean[c] * w[c] / sqrt(var[c] + 1e-5) + b[c])) <= 1e-14);
  }
  memcpy(copy, fb, sizeof copy);
  CHECK_STATUS(bnorm_fold_into_layer(BNORM_FLOAT64, 1, 3, 2, lw, lb, mean, var, w, b,
                                     1e-5, fw, NULL), BNORM_ERROR_NULL_POINTER);
  CHECK_STATUS(bnorm_fold_into_layer(BNORM_FLOAT64, 1, 3, 2, lw, lb, mean, var, w, b,
                                     -1.0, fw, fb), BNORM_ERROR_INVALID_EPS);
  CHECK_STATUS(bnorm_fold_into_layer(BNORM_FLOAT64, INT64_MAX, 3, 2, lw, lb, mean, var,
                                     w, b, 1e-5, fw, fb), BNORM_ERROR_INVALID_SIZE);
  /* writing the folded bias over the statistics is refused */
  CHECK_STATUS(bnorm_fold_into_layer(BNORM_FLOAT64, 1, 3, 2, lw, lb, mean, var, w, b,
                                     1e-5, fw, (void *)var), BNORM_ERROR_OVERLAP);
  CHECK_STATUS(bnorm_fold_into_layer(BNORM_FLOAT64, 1, 3, 2, lw, lb, mean, var, w, b,
                                     1e-5, lw + 1, fb), BNORM_ERROR_OVERLAP);
  CHECK(memcmp(copy, fb, sizeof copy) == 0 && lw[1] == 2);
}

static void test_threads(void) {
  int before = bnorm_get_num_threads();
  CHECK(before >= 1);
  bnorm_set_num_threads(1);
  CHECK(bnorm_get_num_threads() == 1);
  bnorm_set_num_threads(0);
  CHECK(bnorm_get_num_threads() == before);
}

int main(void) {
  test_version();
  test_status_strings();
  test_training_forward();
  test_inference_and_backward();
  test_errors();
  test_inference_helpers();
  test_threads();
  if (failures) {
    printf("%d failed\n", failures);
    return 1;
  }
  printf("C API tests passed\n");
  return 0;
}
