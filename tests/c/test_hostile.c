/* Hostile input at the C door: every entry point, called with one bad
 * argument at a time and then with every pair of bad arguments, must return
 * the pinned status for that argument (for a pair: the status of one of the
 * two) and leave every buffer exactly as it was, guard zones included.
 * Prints how many distinct bad calls were tried. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static long tried = 0;

enum op { TRAIN, INFER, BACKWARD, BACKWARD_FROZEN, SCALE_SHIFT, FOLD, N_OPS };
static const char *op_names[N_OPS] = {"training", "inference", "backward",
                                      "frozen backward", "scale_shift", "fold"};

/* Pointer slots (not every op uses every slot). */
enum slot { X, Y, DY, DX, W, B, SM, SI, RM, RV, DW, DB, LW, LB, N_SLOTS };

struct call {
  enum op op;
  bnorm_dtype dtype;
  int64_t outer, channels, inner;
  void *p[N_SLOTS];
  double eps, momentum;
  uint32_t flags;
};

#define OUTER 3
#define CH 4
#define INNER 5
#define NDATA (OUTER * CH * INNER)
#define GUARD 64 /* bytes around each buffer */
/* data slots hold NDATA values, the rest CH values (doubles: room for both dtypes) */
static int is_data(int s) { return s == X || s == Y || s == DY || s == DX || s == LW; }
static unsigned char arena[N_SLOTS * (NDATA * 8 + 2 * GUARD)];
static unsigned char snapshot[sizeof arena];

static void *slot_ptr(int s) {
  return arena + (size_t)s * (NDATA * 8 + 2 * GUARD) + GUARD;
}

static void fill_arena(void) {
  size_t i;
  int s;
  for (i = 0; i < sizeof arena; ++i) arena[i] = (unsigned char)(0xA5 ^ (i * 7));
  for (s = 0; s < N_SLOTS; ++s) { /* valid values in every slot, both dtypes */
    double *d = (double *)slot_ptr(s);
    const int n = is_data(s) ? NDATA : CH;
    int k;
    for (k = 0; k < n; ++k) d[k] = 0.5 + 0.25 * ((k * 7 + s) % 5); /* > 0: var ok */
  }
}

static struct call valid(enum op op, bnorm_dtype dtype) {
  struct call c;
  int s;
  memset(&c, 0, sizeof c);
  c.op = op;
  c.dtype = dtype;
  c.outer = OUTER;
  c.channels = CH;
  c.inner = INNER;
  for (s = 0; s < N_SLOTS; ++s) c.p[s] = slot_ptr(s);
  c.eps = 1e-5;
  c.momentum = 0.1;
  c.flags = op == BACKWARD_FROZEN ? BNORM_FLAG_FROZEN_STATS : 0;
  return c;
}

static bnorm_status invoke(const struct call *c) {
  void *const *p = c->p;
  switch (c->op) {
    case TRAIN:
      return bnorm_forward_training(c->dtype, c->outer, c->channels, c->inner, p[X], p[Y],
                                    p[W], p[B], p[SM], p[SI], p[RM], p[RV], c->eps,
                                    c->momentum, c->flags);
    case INFER:
      return bnorm_forward_inference(c->dtype, c->outer, c->channels, c->inner, p[X],
                                     p[Y], p[RM], p[RV], p[W], p[B], c->eps);
    case BACKWARD:
    case BACKWARD_FROZEN:
      return bnorm_backward(c->dtype, c->outer, c->channels, c->inner, p[DY], p[X], p[SM],
                            p[SI], p[W], p[DX], p[DW], p[DB], c->flags);
    case SCALE_SHIFT:
      return bnorm_inference_scale_shift(c->dtype, c->channels, p[RM], p[RV], p[W], p[B],
                                         c->eps, p[DW], p[DB]);
    case FOLD:
      return bnorm_fold_into_layer(c->dtype, c->outer, c->channels, c->inner, p[LW], p[LB],
                                   p[RM], p[RV], p[W], p[B], c->eps, p[DX], p[DB]);
    default:
      return -1;
  }
}

/* ---- mutations: one bad argument each, with the status it must give ---- */
struct mutation {
  const char *what;
  int field; /* which argument it spoils: two mutations of one field don't pair */
  bnorm_status want;
  int (*applies)(enum op);
  void (*apply)(struct call *, long arg);
  long arg;
};

enum { F_DTYPE, F_SIZE, F_NULL, F_EPS, F_MOM, F_FLAGS, F_OVERLAP, F_PAIR };

static int all_ops(enum op op) { (void)op; return 1; }
static int training(enum op op) { return op == TRAIN || op == BACKWARD; }
static int has_eps(enum op op) { return op == TRAIN || op == INFER || op == SCALE_SHIFT || op == FOLD; }
static int has_flags(enum op op) { return op == TRAIN || op == BACKWARD || op == BACKWARD_FROZEN; }
static int is_train(enum op op) { return op == TRAIN; }
static int has_data(enum op op) { return op != SCALE_SHIFT; }
static int is_helper(enum op op) { return op == SCALE_SHIFT || op == FOLD; }

static void set_dtype(struct call *c, long v) { c->dtype = (bnorm_dtype)v; }
static void set_outer(struct call *c, long v) { c->outer = v; }
static void set_channels(struct call *c, long v) { c->channels = v; }
static void set_inner(struct call *c, long v) { c->inner = v; }
static void set_sizes_overflow(struct call *c, long v) {
  /* products that overflow int64, or bytes beyond the address space */
  switch (v) {
    case 0: c->outer = INT64_MAX; c->channels = 2; break;
    case 1: c->outer = (int64_t)1 << 40; c->channels = (int64_t)1 << 20; c->inner = 1 << 4; break;
    case 2: c->outer = (int64_t)1 << 61; c->channels = 1; c->inner = 1; break; /* x8 bytes */
    case 3: c->outer = 3; c->channels = (int64_t)1 << 31; c->inner = (int64_t)1 << 31; break;
    case 4: c->outer = INT64_MAX; c->channels = INT64_MAX; c->inner = INT64_MAX; break;
    case 5: c->outer = 1; c->channels = 1; c->inner = INT64_MAX; break;
  }
}
static void set_null(struct call *c, long s) { c->p[s] = NULL; }
static void set_eps(struct call *c, long v) {
  const double bad[] = {0.0, -0.0, -1e-5, -INFINITY, INFINITY, NAN, -NAN, -5e-324};
  c->eps = bad[v];
}
static void set_mom(struct call *c, long v) {
  const double bad[] = {-1e-300, -0.1, 1.0000000000000002, 2.0, INFINITY, -INFINITY, NAN};
  c->momentum = bad[v];
}
static void set_flags(struct call *c, long bit) { c->flags |= (uint32_t)1 << bit; }
/* p + k bytes, or NULL for NULL (a pair of mutations may have nulled p). */
static void *off(void *p, long k) { return p ? (unsigned char *)p + k : NULL; }
static void set_overlap(struct call *c, long v) {
  /* an output that partially overlaps an input or another output */
  void *x = c->p[X];
  switch (c->op) {
    case TRAIN:
      if (v == 0) c->p[Y] = off(x, 8);
      if (v == 1) c->p[SM] = x;            /* save_mean over x */
      if (v == 2) c->p[RV] = off(c->p[RM], 4);
      if (v == 3) c->p[SI] = c->p[SM];     /* two outputs, one buffer */
      if (v == 4) c->p[Y] = off(c->p[W], -8);
      break;
    case INFER:
      if (v == 0) c->p[Y] = off(x, 8);
      if (v == 1) c->p[Y] = c->p[RM];
      if (v == 2) c->p[Y] = off(c->p[B], -4);
      if (v == 3) c->p[Y] = off(x, -8);
      if (v == 4) c->p[Y] = off(c->p[RV], 4);
      break;
    case BACKWARD:
    case BACKWARD_FROZEN:
      if (v == 0) c->p[DX] = off(c->p[DY], 8);
      if (v == 1) c->p[DX] = off(x, -8);
      if (v == 2) c->p[DW] = c->p[DB];
      if (v == 3) c->p[DB] = c->p[SI];
      if (v == 4) c->p[DW] = off(c->p[DX], 16);
      break;
    case SCALE_SHIFT:
      if (v == 0) c->p[DW] = c->p[DB];
      if (v == 1) c->p[DW] = off(c->p[RM], 4);
      if (v == 2) c->p[DB] = off(c->p[DW], 8);
      if (v == 3) c->p[DB] = off(c->p[B], -4);
      if (v == 4) c->p[DW] = off(c->p[RV], -8);
      break;
    case FOLD:
      if (v == 0) c->p[DX] = off(c->p[LW], 8);
      if (v == 1) c->p[DB] = c->p[RM];
      if (v == 2) c->p[DB] = c->p[DX];
      if (v == 3) c->p[DX] = off(c->p[LB], -8);
      if (v == 4) c->p[DB] = off(c->p[W], 4);
      break;
    default:
      break;
  }
}
static void set_half_running(struct call *c, long v) { c->p[v ? RV : RM] = NULL; }

static struct mutation muts[512];
static int n_muts = 0;

static void add(const char *what, int field, bnorm_status want, int (*applies)(enum op),
                void (*apply)(struct call *, long), long arg) {
  struct mutation m;
  m.what = what;
  m.field = field;
  m.want = want;
  m.applies = applies;
  m.apply = apply;
  m.arg = arg;
  muts[n_muts++] = m;
}

/* Which pointer slots an op requires (NULL there is an error). */
static int required(enum op op, int s) {
  switch (op) {
    case TRAIN: return s == X || s == Y;
    case INFER: return s == X || s == Y || s == RM || s == RV;
    case BACKWARD:
    case BACKWARD_FROZEN: return s == DY || s == X || s == SM || s == SI;
    case SCALE_SHIFT: return s == RM || s == RV || s == DW || s == DB;
    case FOLD: return s == LW || s == RM || s == RV || s == DX || s == DB;
    default: return 0;
  }
}

static void build_mutations(void) {
  static const long dtypes[] = {0, -1, 5, 255, 1000, INT32_MIN, INT32_MAX};
  static const long negatives[] = {-1, -2, INT32_MIN, -((long)1 << 40), INT64_MIN};
  size_t i;
  int s;
  for (i = 0; i < sizeof dtypes / sizeof dtypes[0]; ++i)
    add("dtype", F_DTYPE, BNORM_ERROR_UNSUPPORTED_DTYPE, all_ops, set_dtype, dtypes[i]);
  for (i = 0; i < sizeof negatives / sizeof negatives[0]; ++i) {
    add("outer < 0", F_SIZE, BNORM_ERROR_INVALID_SIZE, has_data, set_outer, negatives[i]);
    add("channels < 0", F_SIZE, BNORM_ERROR_INVALID_SIZE, all_ops, set_channels, negatives[i]);
    add("inner < 0", F_SIZE, BNORM_ERROR_INVALID_SIZE, has_data, set_inner, negatives[i]);
  }
  /* half-precision data is valid for the operations, not for the helpers,
   * which take the parameters' type */
  add("half dtype for a helper", F_DTYPE, BNORM_ERROR_UNSUPPORTED_DTYPE, is_helper, set_dtype,
      BNORM_FLOAT16);
  add("bfloat16 dtype for a helper", F_DTYPE, BNORM_ERROR_UNSUPPORTED_DTYPE, is_helper,
      set_dtype, BNORM_BFLOAT16);
  for (i = 0; i < 6; ++i)
    add("size overflow", F_SIZE, BNORM_ERROR_INVALID_SIZE, has_data, set_sizes_overflow, (long)i);
  add("outer = 0 (training)", F_SIZE, BNORM_ERROR_TOO_FEW_VALUES, training, set_outer, 0);
  add("channels = 0 (training)", F_SIZE, BNORM_ERROR_TOO_FEW_VALUES, training, set_channels, 0);
  add("m = 1 (training)", F_SIZE, BNORM_ERROR_TOO_FEW_VALUES, training, set_inner, 0);
  for (s = 0; s < N_SLOTS; ++s)
    add("NULL", F_NULL, BNORM_ERROR_NULL_POINTER, all_ops, set_null, s); /* filtered below */
  for (i = 0; i < 8; ++i)
    add("eps", F_EPS, BNORM_ERROR_INVALID_EPS, has_eps, set_eps, (long)i);
  for (i = 0; i < 7; ++i)
    add("momentum", F_MOM, BNORM_ERROR_INVALID_MOMENTUM, is_train, set_mom, (long)i);
  for (i = 0; i < 32; ++i)
    add("flag bit", F_FLAGS, BNORM_ERROR_INVALID_FLAGS, has_flags, set_flags, (long)i);
  for (i = 0; i < 5; ++i)
    add("overlap", F_OVERLAP, BNORM_ERROR_OVERLAP, all_ops, set_overlap, (long)i);
  add("running_mean without running_var", F_PAIR, BNORM_ERROR_INVALID_ARGUMENT, is_train,
      set_half_running, 1);
  add("running_var without running_mean", F_PAIR, BNORM_ERROR_INVALID_ARGUMENT, is_train,
      set_half_running, 0);
}

/* Does mutation m apply to op (with its argument)? */
static int usable(const struct mutation *m, enum op op) {
  if (!m->applies(op)) return 0;
  if (m->apply == set_null) return required(op, (int)m->arg);
  if (m->apply == set_flags) { /* the bits the op knows are not bad */
    const uint32_t known = op == TRAIN ? BNORM_FLAG_BIASED_RUNNING_VAR
                                       : BNORM_FLAG_FROZEN_STATS;
    return ((uint32_t)1 << m->arg & known) == 0;
  }
  return 1;
}

static void check_call(const struct call *c, const bnorm_status *want, int n_want,
                       const char *what) {
  bnorm_status st;
  int ok = 0, k;
  memcpy(snapshot, arena, sizeof arena);
  st = invoke(c);
  ++tried;
  for (k = 0; k < n_want; ++k) ok |= st == want[k];
  if (!ok) {
    fprintf(stderr, "%s, %s: status %d (%s)\n", op_names[c->op], what, st,
            bnorm_status_string(st));
    ++failures;
  }
  if (memcmp(snapshot, arena, sizeof arena) != 0) {
    fprintf(stderr, "%s, %s: a buffer was written\n", op_names[c->op], what);
    ++failures;
    memcpy(arena, snapshot, sizeof arena);
  }
}

int main(void) {
  int op, i, j, d;
  long singles = 0;
  build_mutations();
  fill_arena();
  for (d = 0; d < 2; ++d) {
    const bnorm_dtype dtype = d ? BNORM_FLOAT64 : BNORM_FLOAT32;
    for (op = 0; op < N_OPS; ++op) {
      /* the valid call works (and may write: restore afterwards) */
      struct call c = valid((enum op)op, dtype);
      if (invoke(&c) != BNORM_OK) {
        fprintf(stderr, "%s: the valid call failed\n", op_names[op]);
        ++failures;
      }
      fill_arena();
      for (i = 0; i < n_muts; ++i) {
        if (!usable(&muts[i], (enum op)op)) continue;
        c = valid((enum op)op, dtype);
        muts[i].apply(&c, muts[i].arg);
        check_call(&c, &muts[i].want, 1, muts[i].what);
        ++singles;
        for (j = i + 1; j < n_muts; ++j) {
          bnorm_status want[2];
          if (!usable(&muts[j], (enum op)op) || muts[j].field == muts[i].field) continue;
          c = valid((enum op)op, dtype);
          muts[i].apply(&c, muts[i].arg);
          muts[j].apply(&c, muts[j].arg);
          want[0] = muts[i].want;
          want[1] = muts[j].want;
          check_call(&c, want, 2, "a pair of bad arguments");
        }
      }
    }
  }
  /* the host pool setting */
  {
    const int bad[] = {0, -1, INT32_MIN};
    for (i = 0; i < 3; ++i) {
      ++tried;
      ++singles;
      if (bnorm_set_parallel_for((bnorm_parallel_for_fn)1, NULL, bad[i]) !=
          BNORM_ERROR_INVALID_ARGUMENT) {
        fprintf(stderr, "set_parallel_for(max_threads=%d) accepted\n", bad[i]);
        ++failures;
      }
    }
    if (strcmp(bnorm_threading_backend(), "host") == 0) {
      fprintf(stderr, "a refused pool was installed\n");
      ++failures;
    }
  }
  /* Empty tensors of no channels with huge outer and inner: every size
   * check passes (the tensor has 0 elements), and a product outer * inner
   * formed before the channel check overflowed, a loop over outer ran
   * 2^62 empty iterations. Each call must return its status at once. */
  {
    const int64_t big = (int64_t)1 << 62;
    float buf[8] = {0};
    double dbl[8] = {0};
    const struct {
      const char *what;
      bnorm_status got, want;
    } empty[] = {
        {"forward_normalize", bnorm_forward_normalize(BNORM_FLOAT32, big, 0, big, buf, buf + 4, 5,
                                                      dbl, dbl + 2, NULL, NULL, NULL, NULL, NULL,
                                                      NULL, 1e-5, 0.1, 0),
         BNORM_ERROR_TOO_FEW_VALUES},
        {"backward_apply", bnorm_backward_apply(BNORM_FLOAT32, big, 0, big, buf, buf, buf, buf,
                                                NULL, dbl, dbl, 5, buf + 4, NULL, NULL),
         BNORM_ERROR_TOO_FEW_VALUES},
        {"frozen backward", bnorm_backward(BNORM_FLOAT32, big, 0, big, buf, buf, buf, buf, NULL,
                                           buf + 4, buf + 5, buf + 6, BNORM_FLAG_FROZEN_STATS),
         BNORM_OK},
        {"fold", bnorm_fold_into_layer(BNORM_FLOAT32, big, 0, big, buf, NULL, buf, buf, NULL,
                                       NULL, 1e-5, buf + 4, buf + 5),
         BNORM_OK},
        {"inference", bnorm_forward_inference(BNORM_FLOAT32, big, 0, big, buf, buf + 4, buf, buf,
                                              NULL, NULL, 1e-5),
         BNORM_OK},
        {"moments", bnorm_moments(BNORM_FLOAT32, big, 0, big, buf, dbl, dbl + 2), BNORM_OK},
        {"training", bnorm_forward_training(BNORM_FLOAT32, big, 0, big, buf, buf + 4, NULL, NULL,
                                            NULL, NULL, NULL, NULL, 1e-5, 0.1, 0),
         BNORM_ERROR_TOO_FEW_VALUES},
        /* channels beyond any per-channel array, on an empty tensor */
        {"inference, 2^62 channels", bnorm_forward_inference(BNORM_FLOAT32, 0, big, 1, buf,
                                                             buf + 4, buf, buf, NULL, NULL, 1e-5),
         BNORM_ERROR_INVALID_SIZE},
    };
    for (i = 0; i < (int)(sizeof empty / sizeof empty[0]); ++i) {
      ++tried;
      ++singles;
      if (empty[i].got != empty[i].want) {
        fprintf(stderr, "%s of an empty tensor with huge sizes: %s, expected %s\n",
                empty[i].what, bnorm_status_string(empty[i].got),
                bnorm_status_string(empty[i].want));
        ++failures;
      }
    }
    for (i = 0; i < 8; ++i)
      if (buf[i] != 0 || dbl[i] != 0) {
        fprintf(stderr, "an empty call wrote into a buffer\n");
        ++failures;
        break;
      }
  }
  if (failures) {
    printf("%d failed\n", failures);
    return 1;
  }
  printf("hostile input: %ld bad calls (%ld with one bad argument, %ld with two), "
         "each refused with its status and no buffer touched\n",
         tried, singles, tried - singles);
  return 0;
}
