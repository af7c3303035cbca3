/* The arithmetic limit of the statistics pass, on data in L1.

     gcc -O2 -march=native -ffp-contract=off benchmarks/reduce_limit.c -o /tmp/reduce_limit
     /tmp/reduce_limit

   (-ffp-contract=off as the kernels are built: a multiply and an add that
   the compiler fuses put the multiply-add's longer latency on the chain of
   each accumulator, which made the float32 loop about 2x slower here.)

   The training statistics of float32 data are sums of d = x - shift and
   d * d in double (d formed in double); those of float16 data form d in
   float and add d and d * d (exact) in double. Each loop below does that
   arithmetic, with the instructions the AVX-512 kernels use, on 16 KiB of
   data that stays in L1, so no memory time is in it: what is left is the
   cost of the arithmetic itself, the most a reduction in double can go
   per value on one core. For scale, the same loop on float accumulators
   (which bnorm does not use: their rounding breaks the variance bound of
   the project's accuracy contract), and a copy of the data within L1.

   Prints nanoseconds per value (one thread), the best of 5 rounds. Needs
   AVX-512 (F, DQ, VL) and F16C. A measurement, not a test. */
#define _POSIX_C_SOURCE 199309L
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#if !defined(__AVX512F__) || !defined(__AVX512DQ__) || !defined(__F16C__)
#error "build with -march=native on a CPU with AVX-512 (F, DQ) and F16C"
#endif

enum { N = 4096, REPS = 20000 };
static float xf[N] __attribute__((aligned(64)));
static float yf[N] __attribute__((aligned(64)));
static uint16_t xh[N] __attribute__((aligned(64)));
static volatile double sink;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* float32 statistics: widen, subtract, add, multiply, add, in double;
   16 lanes in two registers per sum, as the kernel. */
__attribute__((noinline)) static double stats_f32(const float* p, double k) {
  const __m512d kk = _mm512_set1_pd(k);
  __m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
  for (int i = 0; i < N; i += 16) {
    const __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_load_ps(p + i)), kk);
    const __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_load_ps(p + i + 8)), kk);
    a0 = _mm512_add_pd(a0, d0), a1 = _mm512_add_pd(a1, d1);
    b0 = _mm512_add_pd(b0, _mm512_mul_pd(d0, d0));
    b1 = _mm512_add_pd(b1, _mm512_mul_pd(d1, d1));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1)) + _mm512_reduce_add_pd(_mm512_add_pd(b0, b1));
}

/* The same with 32 lanes (four registers per sum): more independent chains. */
__attribute__((noinline)) static double stats_f32_wide(const float* p, double k) {
  const __m512d kk = _mm512_set1_pd(k);
  __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  for (int i = 0; i < N; i += 32) {
    const __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_load_ps(p + i)), kk);
    const __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_load_ps(p + i + 8)), kk);
    const __m512d d2 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_load_ps(p + i + 16)), kk);
    const __m512d d3 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_load_ps(p + i + 24)), kk);
    a0 = _mm512_add_pd(a0, d0), a1 = _mm512_add_pd(a1, d1);
    a2 = _mm512_add_pd(a2, d2), a3 = _mm512_add_pd(a3, d3);
    b0 = _mm512_add_pd(b0, _mm512_mul_pd(d0, d0)), b1 = _mm512_add_pd(b1, _mm512_mul_pd(d1, d1));
    b2 = _mm512_add_pd(b2, _mm512_mul_pd(d2, d2)), b3 = _mm512_add_pd(b3, _mm512_mul_pd(d3, d3));
  }
  const __m512d a = _mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3));
  const __m512d b = _mm512_add_pd(_mm512_add_pd(b0, b1), _mm512_add_pd(b2, b3));
  return _mm512_reduce_add_pd(a) + _mm512_reduce_add_pd(b);
}

/* float16 statistics: F16C widening, d in float, d and d * d (one fused
   multiply-add, exact) in double. */
__attribute__((noinline)) static double stats_f16(const uint16_t* p, float k) {
  const __m256 kk = _mm256_set1_ps(k);
  __m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
  for (int i = 0; i < N; i += 16) {
    const __m256 h0 = _mm256_cvtph_ps(_mm_load_si128((const __m128i*)(p + i)));
    const __m256 h1 = _mm256_cvtph_ps(_mm_load_si128((const __m128i*)(p + i + 8)));
    const __m512d d0 = _mm512_cvtps_pd(_mm256_sub_ps(h0, kk));
    const __m512d d1 = _mm512_cvtps_pd(_mm256_sub_ps(h1, kk));
    a0 = _mm512_add_pd(a0, d0), a1 = _mm512_add_pd(a1, d1);
    b0 = _mm512_fmadd_pd(d0, d0, b0), b1 = _mm512_fmadd_pd(d1, d1, b1);
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1)) + _mm512_reduce_add_pd(_mm512_add_pd(b0, b1));
}

/* For scale: float accumulators, 16 lanes per register. */
__attribute__((noinline)) static double stats_float_acc(const float* p, float k) {
  const __m512 kk = _mm512_set1_ps(k);
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
  for (int i = 0; i < N; i += 32) {
    const __m512 d0 = _mm512_sub_ps(_mm512_load_ps(p + i), kk);
    const __m512 d1 = _mm512_sub_ps(_mm512_load_ps(p + i + 16), kk);
    a0 = _mm512_add_ps(a0, d0), a1 = _mm512_add_ps(a1, d1);
    b0 = _mm512_fmadd_ps(d0, d0, b0), b1 = _mm512_fmadd_ps(d1, d1, b1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));
}

/* Float sums over blocks of 8 steps (8 values per lane), each block added
   into double lanes: the form tried for the float32 statistics (about 2x
   this loop's speed over stats_f32 here, but 1.04-1.11x inside the
   kernels, so not kept: docs/design.md). */
__attribute__((noinline)) static double stats_float_blocks(const float* p, double k) {
  const __m256 kk = _mm256_set1_ps((float)k);
  __m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
  for (int i = 0; i < N; i += 128) {
    __m256 fa = _mm256_setzero_ps(), fb = fa, ga = fa, gb = fa;
    for (int j = 0; j < 8; ++j) {
      const __m256 d = _mm256_sub_ps(_mm256_load_ps(p + i + 16 * j), kk);
      const __m256 e = _mm256_sub_ps(_mm256_load_ps(p + i + 16 * j + 8), kk);
      fa = _mm256_add_ps(fa, d), fb = _mm256_add_ps(fb, _mm256_mul_ps(d, d));
      ga = _mm256_add_ps(ga, e), gb = _mm256_add_ps(gb, _mm256_mul_ps(e, e));
    }
    a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(fa)), a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(ga));
    b0 = _mm512_add_pd(b0, _mm512_cvtps_pd(fb)), b1 = _mm512_add_pd(b1, _mm512_cvtps_pd(gb));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1)) + _mm512_reduce_add_pd(_mm512_add_pd(b0, b1));
}

/* For scale: a copy of the float32 data within L1 (load and store). */
__attribute__((noinline)) static double copy_f32(const float* p, float k) {
  (void)k;
  for (int i = 0; i < N; i += 16) _mm512_store_ps(yf + i, _mm512_load_ps(p + i));
  return yf[N - 1];
}

typedef double (*fn_f32)(const float*, double);
typedef double (*fn_f16)(const uint16_t*, float);

static double best_ns(int which) {
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    const double t0 = now();
    for (int r = 0; r < REPS; ++r) {
      switch (which) {
        case 0: sink = stats_f32(xf, 1.0); break;
        case 1: sink = stats_f32_wide(xf, 1.0); break;
        case 2: sink = stats_f16(xh, 1.0f); break;
        case 3: sink = stats_float_acc(xf, 1.0f); break;
        case 4: sink = stats_float_blocks(xf, 1.0); break;
        default: sink = copy_f32(xf, 0.0f);
      }
    }
    const double t = (now() - t0) / REPS / N * 1e9;
    if (t < best) best = t;
  }
  return best;
}

int main(void) {
  for (int i = 0; i < N; ++i) {
    xf[i] = 1.0f + 0.001f * (float)(i % 997);
    xh[i] = _cvtss_sh(xf[i], 0);
  }
  static const char* names[] = {
      "float32 statistics, double, 16 lanes (the kernel's form)",
      "float32 statistics, double, 32 lanes",
      "float16 statistics, d in float, sums in double",
      "float accumulators (not used: accuracy)",
      "float blocks of 8 into double (tried, not kept)",
      "copy within L1 (load + store)"};
  printf("ns per value, one thread, %d values in L1, best of 5 rounds of %d\n", N, REPS);
  for (int w = 0; w < 6; ++w) printf("  %-58s %.3f\n", names[w], best_ns(w));
  return 0;
}
