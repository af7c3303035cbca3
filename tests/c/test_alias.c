/* The aliasing matrix: for every entry point that has outputs, every
 * combination of the in-place aliasings its header comment allows (each
 * output exactly one of the inputs it may replace, two outputs never the
 * same input), in every code path (small tensors on the calling thread,
 * planar whole-channel blocks, planar and rows reductions spread over the
 * threads, several channel lanes, streaming stores above the cache; training
 * and frozen statistics; the ReLU mask from y and from x), in every dtype,
 * must give the bits of the call with separate buffers. And every overlap
 * the header does not allow (an output exactly another buffer, or partly
 * over it, on either side) is refused with BNORM_ERROR_OVERLAP having
 * written nothing at all.
 *
 * The cache sizes are set small (BNORM_L2_BYTES, BNORM_L3_BYTES) so that
 * the paths of large tensors are reached with tensors of a few MiB. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <bnorm/bnorm.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static long combos_checked = 0, refusals_checked = 0;

#define MAXS 12
#define SLACK 64 /* bytes before and after every buffer in the arena */

enum kind { K_DATA, K_PAR, K_DBL, K_DBLP, K_CNT, K_ONE, K_STATE };

/* Variants of a call (which optional buffers are absent, which flags). */
enum {
  V_FROZEN = 1, /* BNORM_FLAG_FROZEN_STATS */
  V_RELU = 2,   /* BNORM_FLAG_RELU */
  V_NOY = 4,    /* y NULL: the ReLU mask recomputed from x */
  V_NODX = 8,   /* dx NULL: only dresidual (and the sums) wanted */
  V_NORES = 16, /* residual (or dresidual) NULL */
  V_BIASED = 32, /* BNORM_FLAG_BIASED_RUNNING_VAR */
  V_RELU6 = 64   /* with V_RELU: BNORM_FLAG_RELU6 in its place */
};

typedef struct {
  bnorm_dtype dtype;
  int64_t outer, channels, inner;
  int variant;
} Case;

typedef struct {
  const char *name;
  int n;
  const char *names[MAXS];
  int kind[MAXS];
  int out[MAXS];        /* written by the call (an output, or in and out) */
  unsigned alias[MAXS]; /* output s may be exactly input k: bit k */
  int helper;           /* parameter-type helper: float32 and float64 only */
  int data_free;        /* takes no dtype: run once */
  const int *variants;  /* ends with -1 */
  unsigned (*absent)(const Case *); /* slots passed as NULL */
  bnorm_status (*call)(const Case *, void **);
} Entry;

static int64_t elem_size(bnorm_dtype d) {
  return d == BNORM_FLOAT64 ? 8 : d == BNORM_FLOAT32 ? 4 : 2;
}
static int64_t param_size(bnorm_dtype d) { return d == BNORM_FLOAT64 ? 8 : 4; }
static const int64_t kParts = 3;

static int64_t slot_bytes(const Case *c, int kind) {
  const int64_t n = c->outer * c->channels * c->inner;
  switch (kind) {
    case K_DATA: return n * elem_size(c->dtype);
    case K_PAR: return c->channels * param_size(c->dtype);
    case K_DBL: return c->channels * 8;
    case K_DBLP: return kParts * c->channels * 8;
    case K_CNT: return kParts * 8;
    case K_ONE: return 8;
    default: return BNORM_POPULATION_STATE_SIZE(c->channels) * 8;
  }
}

static uint32_t rng_state = 12345u;
static uint32_t next_rand(void) {
  rng_state = rng_state * 1664525u + 1013904223u;
  return rng_state >> 8;
}
/* uniform in [lo, hi) */
static double uniform(double lo, double hi) {
  return lo + (hi - lo) * (double)next_rand() / (double)(1u << 24);
}

/* Values of both signs around 0 (so that a ReLU is open and closed), as
 * bits of the dtype. Half types get sign, a small exponent range and a
 * random mantissa: values of magnitude 1/4 to 4. */
static void fill_data(bnorm_dtype d, void *p, int64_t n) {
  int64_t i;
  for (i = 0; i < n; ++i) {
    const uint32_t r = next_rand();
    if (d == BNORM_FLOAT32) {
      ((float *)p)[i] = (float)uniform(-2.0, 2.0);
    } else if (d == BNORM_FLOAT64) {
      ((double *)p)[i] = uniform(-2.0, 2.0);
    } else if (d == BNORM_FLOAT16) {
      ((uint16_t *)p)[i] = (uint16_t)(((r & 1u) << 15) | ((13u + (r >> 1) % 4u) << 10) |
                                      ((r >> 3) & 0x3FFu));
    } else {
      ((uint16_t *)p)[i] = (uint16_t)(((r & 1u) << 15) | ((125u + (r >> 1) % 4u) << 7) |
                                      ((r >> 3) & 0x7Fu));
    }
  }
}

/* Positive values in [0.5, 1.5): valid weights, biases, means, variances,
 * inverse standard deviations, m2s. */
static void fill_param(int size, void *p, int64_t n) {
  int64_t i;
  for (i = 0; i < n; ++i) {
    if (size == 8)
      ((double *)p)[i] = uniform(0.5, 1.5);
    else
      ((float *)p)[i] = (float)uniform(0.5, 1.5);
  }
}

static void fill_slot(const Case *c, int kind, void *p) {
  int64_t k;
  switch (kind) {
    case K_DATA: fill_data(c->dtype, p, c->outer * c->channels * c->inner); break;
    case K_PAR: fill_param((int)param_size(c->dtype), p, c->channels); break;
    case K_DBL: fill_param(8, p, c->channels); break;
    case K_DBLP: fill_param(8, p, kParts * c->channels); break;
    case K_CNT:
      for (k = 0; k < kParts; ++k) ((int64_t *)p)[k] = 5 + 3 * k;
      break;
    case K_ONE: *(int64_t *)p = -1; break;
    default: {
      /* an initialized accumulator with one batch in it */
      double *mean = malloc((size_t)(c->channels + 1) * 8);
      double *m2 = malloc((size_t)(c->channels + 1) * 8);
      fill_param(8, mean, c->channels);
      fill_param(8, m2, c->channels);
      if (bnorm_population_init(c->channels, p) != BNORM_OK ||
          bnorm_population_add(c->channels, p, 9, mean, m2) != BNORM_OK) {
        fprintf(stderr, "could not prepare a population state\n");
        ++failures;
      }
      free(mean);
      free(m2);
    }
  }
}

/* ---- the entry points --------------------------------------------------- */

#define T(c) ((c)->dtype)
#define SHAPE(c) (c)->outer, (c)->channels, (c)->inner

static uint32_t act_flag(const Case *c) {
  if (!(c->variant & V_RELU)) return 0u;
  return c->variant & V_RELU6 ? BNORM_FLAG_RELU6 : BNORM_FLAG_RELU;
}
static uint32_t train_flags(const Case *c) {
  return (c->variant & V_BIASED ? BNORM_FLAG_BIASED_RUNNING_VAR : 0u) | act_flag(c);
}
static uint32_t back_flags(const Case *c) {
  return (c->variant & V_FROZEN ? BNORM_FLAG_FROZEN_STATS : 0u) | act_flag(c);
}
static unsigned none_absent(const Case *c) {
  (void)c;
  return 0;
}

/* forward_training: x y w b sm si rm rv */
static bnorm_status call_train(const Case *c, void **p) {
  return bnorm_forward_training(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                                p[7], 1e-5, 0.1, train_flags(c));
}
static const int v_train[] = {0, V_BIASED, -1};

/* forward_training_fused: x res y w b sm si rm rv */
static bnorm_status call_train_fused(const Case *c, void **p) {
  return bnorm_forward_training_fused(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4], p[5],
                                      p[6], p[7], p[8], 1e-5, 0.1, train_flags(c));
}
static unsigned res_absent(const Case *c) { return c->variant & V_NORES ? 1u << 1 : 0u; }
static const int v_fused_fwd[] = {0, V_RELU, V_NORES | V_RELU, V_BIASED | V_RELU,
                                  V_RELU | V_RELU6, V_NORES | V_RELU | V_RELU6, -1};

/* forward_inference: x y mean var w b */
static bnorm_status call_infer(const Case *c, void **p) {
  return bnorm_forward_inference(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4], p[5], 1e-5);
}
static const int v_none[] = {0, -1};

/* forward_inference_fused: x res y mean var w b */
static bnorm_status call_infer_fused(const Case *c, void **p) {
  return bnorm_forward_inference_fused(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4], p[5],
                                       p[6], 1e-5, act_flag(c));
}
static const int v_fused_inf[] = {0, V_RELU, V_NORES | V_RELU, V_RELU | V_RELU6, -1};

/* backward: dy x mean invstd w dx dw db */
static bnorm_status call_back(const Case *c, void **p) {
  return bnorm_backward(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
                        back_flags(c));
}
static const int v_back[] = {0, V_FROZEN, -1};

/* backward_fused: dy x y mean invstd w b dx dw db dres */
static bnorm_status call_back_fused(const Case *c, void **p) {
  return bnorm_backward_fused(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                              p[7], p[8], p[9], p[10], back_flags(c));
}
static unsigned back_fused_absent(const Case *c) {
  return (c->variant & V_NOY ? 1u << 2 : 0u) | (c->variant & V_NODX ? 1u << 7 : 0u) |
         (c->variant & V_NORES ? 1u << 10 : 0u);
}
static const int v_back_fused[] = {
    V_RELU, V_RELU | V_FROZEN, V_RELU | V_NOY, V_RELU | V_NOY | V_FROZEN,
    0, V_FROZEN, V_RELU | V_NODX, V_RELU | V_NOY | V_NODX | V_FROZEN,
    V_RELU | V_NORES, V_RELU | V_NOY | V_NORES, V_FROZEN | V_RELU | V_NORES,
    V_RELU | V_RELU6, V_RELU | V_RELU6 | V_NOY, V_RELU | V_RELU6 | V_NODX, -1};

/* inference_scale_shift: mean var w b scale shift */
static bnorm_status call_scale_shift(const Case *c, void **p) {
  return bnorm_inference_scale_shift(T(c), c->channels, p[0], p[1], p[2], p[3], 1e-5, p[4],
                                     p[5]);
}

/* fold_into_layer: lw lb mean var w b fw fb */
static bnorm_status call_fold(const Case *c, void **p) {
  return bnorm_fold_into_layer(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4], p[5], 1e-5,
                               p[6], p[7]);
}

/* moments: x mean m2 */
static bnorm_status call_moments(const Case *c, void **p) {
  return bnorm_moments(T(c), SHAPE(c), p[0], p[1], p[2]);
}

/* merge_moments: counts means m2s count mean m2 */
static bnorm_status call_merge(const Case *c, void **p) {
  return bnorm_merge_moments(kParts, c->channels, p[0], p[1], p[2], p[3], p[4], p[5]);
}

/* forward_normalize: x y mean m2 w b sm si rm rv (count: twice the shard) */
static bnorm_status call_normalize(const Case *c, void **p) {
  return bnorm_forward_normalize(T(c), SHAPE(c), p[0], p[1], 2 * c->outer * c->inner, p[2],
                                 p[3], p[4], p[5], p[6], p[7], p[8], p[9], 1e-5, 0.1,
                                 train_flags(c));
}

/* backward_reduce: dy x mean sum_dy sum_dy_xmu */
static bnorm_status call_back_reduce(const Case *c, void **p) {
  return bnorm_backward_reduce(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4]);
}

/* backward_apply: dy x mean invstd w sum_dy sum_dy_xmu dx dw db */
static bnorm_status call_back_apply(const Case *c, void **p) {
  return bnorm_backward_apply(T(c), SHAPE(c), p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                              2 * c->outer * c->inner, p[7], p[8], p[9]);
}

/* population_add: state mean m2; merge: state other; result: state
 * batches values mean var */
static bnorm_status call_pop_add(const Case *c, void **p) {
  return bnorm_population_add(c->channels, p[0], 7, p[1], p[2]);
}
static bnorm_status call_pop_merge(const Case *c, void **p) {
  return bnorm_population_merge(c->channels, p[0], p[1]);
}
static bnorm_status call_pop_result(const Case *c, void **p) {
  return bnorm_population_result(c->channels, p[0], p[1], p[2], p[3], p[4]);
}

#define B(k) (1u << (k))
static const Entry entries[] = {
    {"forward_training", 8, {"x", "y", "w", "b", "sm", "si", "rm", "rv"},
     {K_DATA, K_DATA, K_PAR, K_PAR, K_PAR, K_PAR, K_PAR, K_PAR},
     {0, 1, 0, 0, 1, 1, 1, 1}, {0, B(0)}, 0, 0, v_train, none_absent, call_train},
    {"forward_training_fused", 9, {"x", "res", "y", "w", "b", "sm", "si", "rm", "rv"},
     {K_DATA, K_DATA, K_DATA, K_PAR, K_PAR, K_PAR, K_PAR, K_PAR, K_PAR},
     {0, 0, 1, 0, 0, 1, 1, 1, 1}, {0, 0, B(0) | B(1)}, 0, 0, v_fused_fwd, res_absent,
     call_train_fused},
    {"forward_inference", 6, {"x", "y", "mean", "var", "w", "b"},
     {K_DATA, K_DATA, K_PAR, K_PAR, K_PAR, K_PAR}, {0, 1, 0, 0, 0, 0}, {0, B(0)}, 0, 0,
     v_none, none_absent, call_infer},
    {"forward_inference_fused", 7, {"x", "res", "y", "mean", "var", "w", "b"},
     {K_DATA, K_DATA, K_DATA, K_PAR, K_PAR, K_PAR, K_PAR}, {0, 0, 1, 0, 0, 0, 0},
     {0, 0, B(0) | B(1)}, 0, 0, v_fused_inf, res_absent, call_infer_fused},
    {"backward", 8, {"dy", "x", "mean", "invstd", "w", "dx", "dw", "db"},
     {K_DATA, K_DATA, K_PAR, K_PAR, K_PAR, K_DATA, K_PAR, K_PAR}, {0, 0, 0, 0, 0, 1, 1, 1},
     {0, 0, 0, 0, 0, B(0) | B(1)}, 0, 0, v_back, none_absent, call_back},
    {"backward_fused", 11,
     {"dy", "x", "y", "mean", "invstd", "w", "b", "dx", "dw", "db", "dres"},
     {K_DATA, K_DATA, K_DATA, K_PAR, K_PAR, K_PAR, K_PAR, K_DATA, K_PAR, K_PAR, K_DATA},
     {0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1},
     {0, 0, 0, 0, 0, 0, 0, B(0) | B(1) | B(2), 0, 0, B(0) | B(1) | B(2)}, 0, 0,
     v_back_fused, back_fused_absent, call_back_fused},
    {"inference_scale_shift", 6, {"mean", "var", "w", "b", "scale", "shift"},
     {K_PAR, K_PAR, K_PAR, K_PAR, K_PAR, K_PAR}, {0, 0, 0, 0, 1, 1},
     {0, 0, 0, 0, B(0) | B(1) | B(2) | B(3), B(0) | B(1) | B(2) | B(3)}, 1, 0, v_none,
     none_absent, call_scale_shift},
    {"fold_into_layer", 8, {"lw", "lb", "mean", "var", "w", "b", "fw", "fb"},
     {K_DATA, K_PAR, K_PAR, K_PAR, K_PAR, K_PAR, K_DATA, K_PAR}, {0, 0, 0, 0, 0, 0, 1, 1},
     {0, 0, 0, 0, 0, 0, B(0), B(1)}, 1, 0, v_none, none_absent, call_fold},
    {"moments", 3, {"x", "mean", "m2"}, {K_DATA, K_DBL, K_DBL}, {0, 1, 1}, {0}, 0, 0,
     v_none, none_absent, call_moments},
    {"merge_moments", 6, {"counts", "means", "m2s", "count", "mean", "m2"},
     {K_CNT, K_DBLP, K_DBLP, K_ONE, K_DBL, K_DBL}, {0, 0, 0, 1, 1, 1}, {0}, 0, 1, v_none,
     none_absent, call_merge},
    {"forward_normalize", 10, {"x", "y", "mean", "m2", "w", "b", "sm", "si", "rm", "rv"},
     {K_DATA, K_DATA, K_DBL, K_DBL, K_PAR, K_PAR, K_PAR, K_PAR, K_PAR, K_PAR},
     {0, 1, 0, 0, 0, 0, 1, 1, 1, 1}, {0, B(0)}, 0, 0, v_train, none_absent, call_normalize},
    {"backward_reduce", 5, {"dy", "x", "mean", "sum_dy", "sum_dy_xmu"},
     {K_DATA, K_DATA, K_PAR, K_DBL, K_DBL}, {0, 0, 0, 1, 1}, {0}, 0, 0, v_none, none_absent,
     call_back_reduce},
    {"backward_apply", 10,
     {"dy", "x", "mean", "invstd", "w", "sum_dy", "sum_dy_xmu", "dx", "dw", "db"},
     {K_DATA, K_DATA, K_PAR, K_PAR, K_PAR, K_DBL, K_DBL, K_DATA, K_PAR, K_PAR},
     {0, 0, 0, 0, 0, 0, 0, 1, 1, 1}, {0, 0, 0, 0, 0, 0, 0, B(0) | B(1)}, 0, 0, v_none,
     none_absent, call_back_apply},
    {"population_add", 3, {"state", "mean", "m2"}, {K_STATE, K_DBL, K_DBL}, {1, 0, 0}, {0},
     0, 1, v_none, none_absent, call_pop_add},
    {"population_merge", 2, {"state", "other"}, {K_STATE, K_STATE}, {1, 0}, {0}, 0, 1,
     v_none, none_absent, call_pop_merge},
    {"population_result", 5, {"state", "batches", "values", "mean", "var"},
     {K_STATE, K_ONE, K_ONE, K_DBL, K_DBL}, {0, 1, 1, 1, 1}, {0}, 0, 1, v_none, none_absent,
     call_pop_result},
};
#define N_ENTRIES ((int)(sizeof entries / sizeof entries[0]))

/* ---- the driver ---------------------------------------------------------- */

typedef struct {
  unsigned char *pristine; /* every slot's initial content */
  unsigned char *work;
  unsigned char *ref;      /* the non-aliased call's results */
  int64_t off[MAXS], bytes[MAXS], total;
} Arena;

static void arena_init(Arena *a, const Entry *e, const Case *c) {
  int s;
  int64_t at = SLACK;
  for (s = 0; s < e->n; ++s) {
    a->bytes[s] = slot_bytes(c, e->kind[s]);
    a->off[s] = at;
    at += (a->bytes[s] + 63) / 64 * 64 + SLACK;
  }
  a->total = at;
  a->pristine = malloc((size_t)at);
  a->work = malloc((size_t)at);
  a->ref = malloc((size_t)at);
  memset(a->pristine, 0xA5, (size_t)at);
  for (s = 0; s < e->n; ++s) fill_slot(c, e->kind[s], a->pristine + a->off[s]);
}

static void arena_free(Arena *a) {
  free(a->pristine);
  free(a->work);
  free(a->ref);
}

static void describe(const Entry *e, const Case *c, const int *as) {
  int s;
  fprintf(stderr, "  %s dtype %d shape (%lld, %lld, %lld) variant %d:", e->name, (int)c->dtype,
          (long long)c->outer, (long long)c->channels, (long long)c->inner, c->variant);
  for (s = 0; s < e->n; ++s)
    if (as && as[s] >= 0) fprintf(stderr, " %s=%s", e->names[s], e->names[as[s]]);
  fprintf(stderr, "\n");
}

/* One call with outputs aliased as as[s] (-1: its own buffer). Compares
 * with the reference in a->ref. */
static void run_combo(const Entry *e, const Case *c, Arena *a, const int *as,
                      unsigned absent) {
  void *p[MAXS];
  int s, k;
  bnorm_status st;
  memcpy(a->work, a->pristine, (size_t)a->total);
  for (s = 0; s < e->n; ++s) p[s] = absent >> s & 1 ? NULL : a->work + a->off[s];
  for (s = 0; s < e->n; ++s)
    if (as[s] >= 0) p[s] = p[as[s]];
  st = e->call(c, p);
  ++combos_checked;
  if (st != BNORM_OK) {
    fprintf(stderr, "allowed aliasing refused: %s\n", bnorm_status_string(st));
    describe(e, c, as);
    ++failures;
    return;
  }
  for (s = 0; s < e->n; ++s) {
    int reads_only = !e->out[s];
    if (absent >> s & 1) continue;
    for (k = 0; k < e->n; ++k)
      if (as[k] == s) reads_only = 0;
    if (e->out[s]) {
      /* the result sits where the output was pointed */
      const unsigned char *got = p[s];
      if (memcmp(got, a->ref + a->off[s], (size_t)a->bytes[s]) != 0) {
        fprintf(stderr, "aliased call: %s differs from the non-aliased call\n", e->names[s]);
        describe(e, c, as);
        ++failures;
        return;
      }
    } else if (reads_only &&
               memcmp(a->work + a->off[s], a->pristine + a->off[s], (size_t)a->bytes[s]) != 0) {
      fprintf(stderr, "aliased call wrote into input %s\n", e->names[s]);
      describe(e, c, as);
      ++failures;
      return;
    }
  }
}

/* Every assignment of outputs (from slot s on) to allowed inputs. */
static void enumerate(const Entry *e, const Case *c, Arena *a, int *as, int s,
                      unsigned absent, unsigned used) {
  int k;
  if (s == e->n) {
    for (k = 0; k < e->n; ++k)
      if (as[k] >= 0) {
        run_combo(e, c, a, as, absent);
        return;
      }
    return; /* the reference itself */
  }
  as[s] = -1;
  enumerate(e, c, a, as, s + 1, absent, used);
  if (absent >> s & 1) return;
  for (k = 0; k < e->n; ++k) {
    if (!(e->alias[s] >> k & 1) || (absent >> k & 1) || (used >> k & 1)) continue;
    as[s] = k;
    enumerate(e, c, a, as, s + 1, absent, used | 1u << k);
    as[s] = -1;
  }
}

/* Every overlap that is not allowed: refused, nothing written. */
static void refusals(const Entry *e, const Case *c, Arena *a, unsigned absent) {
  int o, j, how;
  for (o = 0; o < e->n; ++o) {
    if (!e->out[o] || (absent >> o & 1) || a->bytes[o] == 0) continue;
    for (j = 0; j < e->n; ++j) {
      if (j == o || (absent >> j & 1) || a->bytes[j] == 0) continue;
      for (how = 0; how < 3; ++how) {
        /* 0: exactly j (unless allowed), 1: one element past j's start,
         * 2: ending one element into j */
        void *p[MAXS];
        int s;
        int64_t shift;
        bnorm_status st;
        const int64_t unit = e->kind[o] == K_DATA ? elem_size(c->dtype)
                             : e->kind[o] == K_PAR ? param_size(c->dtype) : 8;
        if (how == 0 && !e->out[j] && (e->alias[o] >> j & 1) && a->bytes[o] == a->bytes[j])
          continue; /* allowed */
        if (how == 1 && a->bytes[j] <= unit) continue;
        if (how == 2 && a->bytes[o] <= unit) continue;
        shift = how == 0 ? 0 : how == 1 ? unit : unit - a->bytes[o];
        if (a->off[j] + shift < 0) continue; /* would start before the arena */
        memcpy(a->work, a->pristine, (size_t)a->total);
        for (s = 0; s < e->n; ++s) p[s] = absent >> s & 1 ? NULL : a->work + a->off[s];
        p[o] = (unsigned char *)p[j] + shift;
        st = e->call(c, p);
        ++refusals_checked;
        /* (an accumulator moved over another buffer is no longer an
         * initialized one, which is found first) */
        if (st != BNORM_ERROR_OVERLAP &&
            !(e->kind[o] == K_STATE && st == BNORM_ERROR_INVALID_ARGUMENT)) {
          fprintf(stderr, "overlap of %s with %s (%s) gave \"%s\", not OVERLAP\n", e->names[o],
                  e->names[j], how == 0 ? "same start" : "partial", bnorm_status_string(st));
          describe(e, c, NULL);
          ++failures;
        } else if (memcmp(a->work, a->pristine, (size_t)a->total) != 0) {
          fprintf(stderr, "refused overlap of %s with %s wrote into a buffer\n", e->names[o],
                  e->names[j]);
          describe(e, c, NULL);
          ++failures;
        }
      }
    }
  }
}

static void run_entry(const Entry *e, const Case *c, int with_refusals) {
  Arena a;
  int as[MAXS], s, v;
  for (v = 0; e->variants[v] >= 0; ++v) {
    Case cv = *c;
    unsigned absent;
    void *p[MAXS];
    bnorm_status st;
    cv.variant = e->variants[v];
    absent = e->absent(&cv);
    rng_state = 777u + (uint32_t)v;
    arena_init(&a, e, &cv);
    /* the reference: separate buffers */
    memcpy(a.ref, a.pristine, (size_t)a.total);
    for (s = 0; s < e->n; ++s) p[s] = absent >> s & 1 ? NULL : a.ref + a.off[s];
    st = e->call(&cv, p);
    if (st != BNORM_OK) {
      fprintf(stderr, "reference call failed: %s\n", bnorm_status_string(st));
      describe(e, &cv, NULL);
      ++failures;
      arena_free(&a);
      continue;
    }
    for (s = 0; s < e->n; ++s) as[s] = -1;
    enumerate(e, &cv, &a, as, 0, absent, 0u);
    if (with_refusals) refusals(e, &cv, &a, absent);
    arena_free(&a);
  }
}

int main(void) {
  static const bnorm_dtype dtypes[] = {BNORM_FLOAT32, BNORM_FLOAT64, BNORM_FLOAT16,
                                       BNORM_BFLOAT16};
  int d, i, k;
  /* small caches, read once before the first call: the whole-channel
   * blocks end at 112 KiB of a channel's data and the stores stream above
   * 2 MiB of output, so every path is reached by the shapes below */
  setenv("BNORM_L2_BYTES", "131072", 0);
  setenv("BNORM_L3_BYTES", "4194304", 0);
  bnorm_set_num_threads(2);
  for (d = 0; d < 4; ++d) {
    const bnorm_dtype dt = dtypes[d];
    const int64_t es = elem_size(dt);
    /* outer, channels, inner */
    const int64_t shapes[][3] = {
        {2, 3, 25},                /* small planar: the calling thread */
        {5, 4, 7},                 /* (N, C, L), short runs */
        {40, 5, 1},                /* small rows (channels last) */
        {8, 4, 1024},              /* planar whole-channel blocks, 2 threads */
        {16, 3, 4096},             /* planar, groups over the threads */
        {8192, 24, 1},             /* rows, groups over the threads */
        {600, 300, 1},             /* rows, two channel lanes */
        {256, 1024, 1},            /* (N, C) wide rows, four lanes */
        {160 / es, 4, 4096},       /* planar above the cache: streaming stores */
        {81920 / es, 32, 1},       /* rows above the cache */
    };
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (i = 0; i < n_shapes; ++i) {
      Case c;
      c.dtype = dt;
      c.outer = shapes[i][0];
      c.channels = shapes[i][1];
      c.inner = shapes[i][2];
      c.variant = 0;
      for (k = 0; k < N_ENTRIES; ++k) {
        const Entry *e = &entries[k];
        if (e->helper && dt != BNORM_FLOAT32 && dt != BNORM_FLOAT64) continue;
        if (e->data_free && (dt != BNORM_FLOAT32 || i > 2)) continue;
        /* refusals on the small shapes (they do not depend on the path) */
        run_entry(e, &c, i < 3);
      }
    }
  }
  printf("aliasing: %ld aliased calls bitwise equal to the non-aliased ones, "
         "%ld refused overlaps that wrote nothing\n",
         combos_checked, refusals_checked);
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
