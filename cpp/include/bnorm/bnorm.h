/*
 * bnorm.h -- batch normalization on the CPU, behind a stable C ABI.
 *
 * What it is
 * ----------
 * bnorm computes batch normalization (Ioffe & Szegedy, 2015): the training
 * forward pass (batch statistics, normalization, running-statistics update),
 * the inference forward pass (population statistics), and the backward pass
 * (dx, dgamma, dbeta). The core is C++17 with OpenMP threads; this header is
 * plain C99 and C++ and is the only public interface.
 *
 * The data layout
 * ---------------
 * Every tensor is a dense, C-contiguous array viewed as [outer, channels, inner]:
 *
 *     NCHW            outer = N,        inner = H*W
 *     NHWC / (N,L,C)  outer = N*H*W,    inner = 1     (channels last)
 *     (N, C)          outer = N,        inner = 1
 *     (N, C, L)       outer = N,        inner = L
 *     NCDHW           outer = N,        inner = D*H*W
 *
 * The element at (o, c, i) lives at index (o * channels + c) * inner + i.
 * One channel's m = outer * inner values are normalized together.
 *
 * Per-channel arrays (weight, bias, running and saved statistics, gradients
 * of weight and bias) hold `channels` elements of the *parameter type*:
 * double when the data is BNORM_FLOAT64, float otherwise (float32, float16,
 * bfloat16).
 *
 * The math (per channel, sums over its m values)
 * ----------------------------------------------
 *     mean   = sum(x) / m
 *     var    = sum((x - mean)^2) / m              (biased; normalizes)
 *     invstd = 1 / sqrt(var + eps)
 *     y      = (x - mean) * invstd * gamma + beta
 *     running_mean = (1 - momentum) * running_mean + momentum * mean
 *     running_var  = (1 - momentum) * running_var  + momentum * var * m/(m-1)
 *                    (or * var, with BNORM_FLAG_BIASED_RUNNING_VAR: ONNX)
 *   backward, with g = dL/dy:
 *     dbeta  = sum(g)
 *     dgamma = sum(g * (x - mean) * invstd)
 *     dx     = gamma * invstd * (g - dbeta/m - (x - mean) * invstd * dgamma/m)
 *     frozen statistics (eval mode): dx = g * gamma * invstd
 *
 * Statistics are accumulated in double precision in chunks that are merged
 * in an order fixed by the shape alone, so results are bitwise identical for
 * any number of threads and on every CPU (the kernels are compiled per
 * instruction set and chosen at run time, all with the same order of
 * operations).
 *
 * Errors and memory
 * -----------------
 * Every function that can fail returns a bnorm_status: BNORM_OK (0) or one of
 * the pinned error codes below; bnorm_status_string() describes each. When a
 * function fails it has written nothing into any caller buffer. No C++
 * exception, abort or exit crosses this interface. The caller owns all
 * memory; the inference path allocates nothing (the kernels use up to about
 * 100 KiB of the calling thread's stack). The training, backward and
 * split-phase entry points allocate one block of scratch memory per call,
 * before they write anything; their _ws forms take that block from the
 * caller instead ("Caller-owned workspace" below), so that every operation
 * can run with no allocation inside bnorm. Every function is thread-safe
 * and reentrant.
 *
 * Aliasing
 * --------
 * An output may share memory with an input only where its description below
 * says "may be exactly" that input: the same start and the same size (in
 * place). Such a call gives bitwise the results of the same call with
 * separate buffers. Every other overlap -- an output partly over any buffer,
 * two outputs sharing memory, a per-channel output over any other buffer
 * unless listed -- is refused with BNORM_ERROR_OVERLAP before anything is
 * written.
 *
 * Processes
 * ---------
 * A process may fork() after using bnorm on several threads: in the child,
 * bnorm neither hangs nor gives other bits. GNU OpenMP's thread pool does not
 * survive fork (the child's first parallel region would wait for threads
 * that are gone), so in a child of fork() an OpenMP build runs its parallel
 * work on threads of its own instead, started on the child's first call that
 * splits its work, with the same thread count (bnorm_set_num_threads still
 * applies; bnorm_threading_backend() says "bnorm"). A host pool set with
 * bnorm_set_parallel_for stays set in the child: it must work there.
 *
 * Versioning
 * ----------
 * MAJOR changes break the ABI or the documented behaviour (the shared
 * library's SONAME is libbnorm.so.MAJOR); MINOR adds functions, flags or
 * enum values without breaking existing callers; PATCH fixes bugs. Compare
 * BNORM_VERSION_NUMBER with bnorm_version_number() to detect a header and
 * library mismatch. This header is the single source of the version number.
 */
#ifndef BNORM_BNORM_H
#define BNORM_BNORM_H

#include <stddef.h>
#include <stdint.h>

#define BNORM_VERSION_MAJOR 0
#define BNORM_VERSION_MINOR 4
#define BNORM_VERSION_PATCH 0

#define BNORM_VERSION_NUMBER \
  (BNORM_VERSION_MAJOR * 10000 + BNORM_VERSION_MINOR * 100 + BNORM_VERSION_PATCH)

#if defined(BNORM_STATIC_DEFINE)
#  define BNORM_API
#elif defined(_WIN32)
#  if defined(BNORM_BUILDING_LIBRARY)
#    define BNORM_API __declspec(dllexport)
#  else
#    define BNORM_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define BNORM_API __attribute__((visibility("default")))
#else
#  define BNORM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status codes. The values are pinned: they never change meaning.          */
/* ------------------------------------------------------------------------ */

typedef int32_t bnorm_status;

#define BNORM_OK                      0
/* A required pointer argument is NULL. */
#define BNORM_ERROR_NULL_POINTER      1
/* A size is negative, or outer*channels*inner (or the workspace a call
 * needs, in bytes) overflows int64 or memory. */
#define BNORM_ERROR_INVALID_SIZE      2
/* The dtype argument is not a known bnorm_dtype, or is not supported yet. */
#define BNORM_ERROR_UNSUPPORTED_DTYPE 3
/* eps is not finite or not > 0. */
#define BNORM_ERROR_INVALID_EPS       4
/* momentum is not in [0, 1] (or is NaN). */
#define BNORM_ERROR_INVALID_MOMENTUM  5
/* Training needs more than one value per channel (m = outer*inner > 1)
 * and at least one channel. */
#define BNORM_ERROR_TOO_FEW_VALUES    6
/* The flags argument has a bit this version does not know. */
#define BNORM_ERROR_INVALID_FLAGS     7
/* Two buffers overlap where that is not allowed (an output partially
 * overlapping an input, or two outputs sharing memory). */
#define BNORM_ERROR_OVERLAP           8
/* Scratch memory for the training reductions could not be allocated. */
#define BNORM_ERROR_OUT_OF_MEMORY     9
/* An argument pair is inconsistent (e.g. running_mean given without
 * running_var). */
#define BNORM_ERROR_INVALID_ARGUMENT  10
/* A bug in bnorm: an internal failure that was contained. Please report. */
#define BNORM_ERROR_INTERNAL          11
/* The workspace passed to a _ws entry point is smaller than
 * bnorm_workspace_size reports for the call. (Since 0.3.) */
#define BNORM_ERROR_WORKSPACE_TOO_SMALL 12

/* A static, NUL-terminated English description of a status code; for an
 * unknown code, a string saying so. Never NULL. */
BNORM_API const char *bnorm_status_string(bnorm_status status);

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

/* BNORM_VERSION_NUMBER of the library that is linked (not the header). */
BNORM_API int bnorm_version_number(void);
/* "MAJOR.MINOR.PATCH" of the library that is linked. */
BNORM_API const char *bnorm_version_string(void);

/* ------------------------------------------------------------------------ */
/* Data types                                                               */
/* ------------------------------------------------------------------------ */

typedef int32_t bnorm_dtype;

/* float data, float parameters and statistics. */
#define BNORM_FLOAT32  1
/* double data, double parameters and statistics. */
#define BNORM_FLOAT64  2
/* Half-precision data (IEEE binary16, and bfloat16: 16-bit words, C has no
 * type for them) with float parameters and statistics; the arithmetic is in
 * float (statistics in double, as for float) and each result is rounded to
 * the data type once, to nearest even. Since 0.2: the operations, the fused
 * and the split-phase entry points; the inference helpers take the
 * parameters' type (BNORM_FLOAT32) and refuse these. */
#define BNORM_FLOAT16  3
#define BNORM_BFLOAT16 4

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */
/* ------------------------------------------------------------------------ */

/* Sets how many threads later calls may use (process-wide). n <= 0 restores
 * the default (OpenMP's default team size). Results never depend on it. In a
 * build without OpenMP this has no effect and the count stays 1. */
BNORM_API void bnorm_set_num_threads(int n);
/* The number of threads calls will use. */
BNORM_API int bnorm_get_num_threads(void);

/*
 * Running on the host's threads (for runtimes that own a thread pool).
 *
 * By default bnorm runs its parallel work on OpenMP threads (in a build
 * without OpenMP, on the calling thread). A host that keeps its own pool can
 * take that work instead: after bnorm_set_parallel_for(fn, ctx, max_threads),
 * a call that splits its work does so into at most max_threads parts, and
 * each phase of it becomes one call
 *
 *     fn(ctx, n, task, task_context)
 *
 * which must call task(task_context, i) exactly once for every i in [0, n),
 * on any threads, in any order, concurrently or one after another, and
 * return only when all n have returned. Tasks never wait for one another, so
 * a pool that runs them serially (or inline) is correct. Small calls run on
 * the calling thread without calling fn. Results are bitwise the same for
 * any pool and any max_threads (the work is cut by the shape alone). A task
 * uses up to about 100 KiB of the stack of the thread that runs it, and
 * never throws, blocks on a lock or calls back into the host.
 *
 *   parallel_for   the host's parallel-for, or NULL to go back to the default
 *                  (pool_context and max_threads are then ignored).
 *   pool_context   passed back to fn unchanged.
 *   max_threads    >= 1; bnorm_get_num_threads() reports it while set.
 *
 * This setting is process-wide, like bnorm_set_num_threads (the only other
 * global state). A call in flight keeps the pool it started with, so the
 * host must keep that pool usable until such calls return.
 *
 * Errors: INVALID_ARGUMENT (max_threads < 1 with a non-NULL parallel_for).
 */
/* Who runs the parallel work now: "host" (a bnorm_set_parallel_for pool is
 * set), "openmp", "bnorm" (bnorm's own threads: an OpenMP build in a child
 * of fork(), see "Processes" above), or "none" (a build without OpenMP: the
 * calling thread). */
BNORM_API const char *bnorm_threading_backend(void);

typedef void (*bnorm_task_fn)(void *task_context, int64_t index);
typedef void (*bnorm_parallel_for_fn)(void *pool_context, int64_t n,
                                      bnorm_task_fn task, void *task_context);
BNORM_API bnorm_status bnorm_set_parallel_for(bnorm_parallel_for_fn parallel_for,
                                              void *pool_context,
                                              int max_threads);

/* The instruction set the kernels run with, chosen once per process from
 * what the CPU supports: "avx512", "avx2" (x86-64; one without AVX2 and
 * FMA runs "scalar"), "baseline" (other CPUs) or "scalar". The environment variable BNORM_ISA, read once
 * before the first call, can ask for any of these the CPU supports (the
 * tests use it to hold every vector copy against the scalar one).
 * Likewise BNORM_L2_BYTES and BNORM_L3_BYTES, positive byte counts, replace
 * the per-core and last-level cache sizes read from the system (within
 * 128 KiB-64 MiB and 1 MiB-1 GiB); they change only how work is scheduled,
 * never a result (the tests use them to reach the paths of large tensors
 * with small ones). */
BNORM_API const char *bnorm_kernel_isa(void);

/* ------------------------------------------------------------------------ */
/* Flags                                                                    */
/* ------------------------------------------------------------------------ */

/* Training forward: update running_var with the biased batch variance
 * (ONNX BatchNormalization convention) instead of the unbiased one. */
#define BNORM_FLAG_BIASED_RUNNING_VAR  (1u << 0)
/* Backward: the statistics were constants (eval mode, frozen batch norm),
 * so dx = g * gamma * invstd. */
#define BNORM_FLAG_FROZEN_STATS        (1u << 1)
/* The _fused entry points: a ReLU after the batch norm (and the residual
 * addition), y = max(BN(x) + residual, 0); in the backward, g = dy where
 * the ReLU was open. (Since 0.2.) */
#define BNORM_FLAG_RELU                (1u << 2)
/* The _fused entry points: a ReLU6 instead, y = min(max(BN(x) + residual,
 * 0), 6) (MobileNet's activation; NaN stays NaN); in the backward, g = dy
 * where 0 < value < 6, as PyTorch's hardtanh backward. At most one of
 * BNORM_FLAG_RELU and BNORM_FLAG_RELU6 (both: INVALID_FLAGS). (Since 0.4.) */
#define BNORM_FLAG_RELU6               (1u << 3)

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Training forward.
 *
 * Computes each channel's batch mean and biased variance over its
 * m = outer * inner values, writes y = (x - mean) * invstd * gamma + beta,
 * and optionally the statistics and the running-statistics update.
 *
 *   x, y                 outer*channels*inner elements of dtype. y may be
 *                        exactly x (in place).
 *   weight, bias         gamma and beta, or NULL for 1 and 0.
 *   save_mean,           outputs: the batch mean and 1/sqrt(var + eps);
 *   save_invstd          either may be NULL. They overlap no other buffer.
 *   running_mean,        updated in place with `momentum`, both or neither
 *   running_var          (NULL, NULL). The unbiased variance var*m/(m-1) is
 *                        used unless BNORM_FLAG_BIASED_RUNNING_VAR is set.
 *                        They overlap no other buffer.
 *   eps                  finite and > 0.
 *   momentum             in [0, 1]; ignored when no running statistics.
 *   flags                0 or BNORM_FLAG_BIASED_RUNNING_VAR.
 *
 * Errors: NULL_POINTER (x or y), INVALID_SIZE, UNSUPPORTED_DTYPE,
 * INVALID_EPS, INVALID_MOMENTUM, TOO_FEW_VALUES (m <= 1 or channels == 0),
 * INVALID_FLAGS, INVALID_ARGUMENT (only one running statistic), OVERLAP,
 * OUT_OF_MEMORY.
 */
BNORM_API bnorm_status bnorm_forward_training(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, void *y, const void *weight, const void *bias,
    void *save_mean, void *save_invstd,
    void *running_mean, void *running_var,
    double eps, double momentum, uint32_t flags);

/*
 * Inference forward: y = (x - mean) * gamma / sqrt(var + eps) + beta with the
 * given (population / running) statistics. Allocates nothing. An empty tensor
 * (outer, channels or inner zero) is valid and writes nothing.
 *
 *   x, y                 as for training; y may be exactly x (in place).
 *   mean, var            the statistics, `channels` parameter-type values.
 *   weight, bias         gamma and beta, or NULL for 1 and 0.
 *   eps                  finite and > 0.
 *
 * Errors: NULL_POINTER, INVALID_SIZE, UNSUPPORTED_DTYPE, INVALID_EPS,
 * OVERLAP.
 */
BNORM_API bnorm_status bnorm_forward_inference(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, void *y, const void *mean, const void *var,
    const void *weight, const void *bias, double eps);

/*
 * Backward.
 *
 * From g = dy, x and the statistics of the forward pass (save_mean and
 * save_invstd of bnorm_forward_training; or, with BNORM_FLAG_FROZEN_STATS,
 * the running mean and 1/sqrt(running_var + eps)) computes
 *   dbias   = sum(g)                         per channel
 *   dweight = sum(g * (x - mean) * invstd)   per channel
 *   dx      = see the math above (training) or g * gamma * invstd (frozen).
 *
 *   dy, x                outer*channels*inner elements of dtype.
 *   mean, invstd         `channels` parameter-type values each (required).
 *   weight               gamma, or NULL for 1.
 *   dx                   output, or NULL to skip it. May be exactly dy or
 *                        exactly x (in place).
 *   dweight, dbias       outputs, `channels` values each, or NULL to skip;
 *                        they overlap no other buffer.
 *   flags                0 or BNORM_FLAG_FROZEN_STATS.
 *
 * Training mode needs m > 1 (TOO_FEW_VALUES otherwise). An empty tensor in
 * frozen mode is valid: dweight and dbias become 0.
 *
 * Errors: NULL_POINTER, INVALID_SIZE, UNSUPPORTED_DTYPE, TOO_FEW_VALUES,
 * INVALID_FLAGS, OVERLAP, OUT_OF_MEMORY.
 */
BNORM_API bnorm_status bnorm_backward(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *x, const void *mean, const void *invstd,
    const void *weight, void *dx, void *dweight, void *dbias,
    uint32_t flags);

/* ------------------------------------------------------------------------ */
/* Fused batch norm + residual + ReLU (since 0.2)                           */
/* ------------------------------------------------------------------------ */

/*
 * The paper applies batch norm right before the nonlinearity, z = g(BN(Wu)),
 * and residual networks add a shortcut before it. These entry points do
 * both in the batch norm's own pass over memory:
 *
 *     y = BN(x) + residual          (residual NULL: no addition)
 *     y = max(y, 0)                 (with BNORM_FLAG_RELU; NaN stays NaN)
 *     y = min(max(y, 0), 6)         (with BNORM_FLAG_RELU6 instead)
 *
 * and the backward of that composition. With residual NULL and no flag they
 * are the plain entry points above (which are these, bit for bit).
 */

/*
 * Training forward, fused: as bnorm_forward_training, then the residual and
 * the ReLU. The statistics are those of x alone.
 *   residual   outer*channels*inner elements of dtype, or NULL. y may be
 *              exactly x or exactly residual (in place); the per-channel
 *              outputs overlap no other buffer.
 *   flags      BNORM_FLAG_BIASED_RUNNING_VAR, BNORM_FLAG_RELU or _RELU6.
 * Errors: as bnorm_forward_training.
 */
BNORM_API bnorm_status bnorm_forward_training_fused(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, const void *residual, void *y, const void *weight,
    const void *bias, void *save_mean, void *save_invstd, void *running_mean,
    void *running_var, double eps, double momentum, uint32_t flags);

/*
 * Inference forward, fused: as bnorm_forward_inference, then the residual
 * and the ReLU. Allocates nothing.
 *   residual   as above; y may be exactly x or exactly residual.
 *   flags      0, BNORM_FLAG_RELU or BNORM_FLAG_RELU6.
 * Errors: as bnorm_forward_inference, and INVALID_FLAGS.
 */
BNORM_API bnorm_status bnorm_forward_inference_fused(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, const void *residual, void *y, const void *mean,
    const void *var, const void *weight, const void *bias, double eps,
    uint32_t flags);

/*
 * Backward of the fused forward. With BNORM_FLAG_RELU the gradient reaching
 * the sum BN(x) + residual is g = dy where the ReLU was open and 0 elsewhere
 * (selected, so a NaN dy where it was closed gives 0); then dx, dweight and
 * dbias are bnorm_backward's with g for dy, and dresidual = g. The ReLU is
 * read from y, the forward's output (open where y > 0), in the same pass;
 * for BN + ReLU without a residual, y may be NULL and the mask is recomputed
 * from x as (x - mean) * (gamma * invstd) + beta > 0, reading no extra tensor
 * (bias must then be the forward's beta; the recomputed mask can differ from
 * y > 0 only where the output was within rounding of 0). Without
 * BNORM_FLAG_RELU, g = dy.
 *
 *   y            the forward's output, or NULL (see above).
 *   bias         beta (for the recomputed mask), or NULL for 0.
 *   dx, dresidual, dweight, dbias   outputs, each may be NULL. dx may be
 *                exactly dy, x or y (in place); so may dresidual, but not
 *                the same one as dx (dx and dresidual never share memory).
 *                dweight and dbias overlap no other buffer.
 *   flags        BNORM_FLAG_FROZEN_STATS, BNORM_FLAG_RELU or _RELU6. With
 *                BNORM_FLAG_RELU6 the gradient is let through where
 *                0 < y < 6 (or the recomputed pre-activation is), in the
 *                same ways as the ReLU's.
 * Errors: as bnorm_backward.
 */
BNORM_API bnorm_status bnorm_backward_fused(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *x, const void *y, const void *mean,
    const void *invstd, const void *weight, const void *bias, void *dx,
    void *dweight, void *dbias, void *dresidual, uint32_t flags);

/* ------------------------------------------------------------------------ */
/* In-Place Activated Batch Norm: the backward from the output (since 0.4)  */
/* ------------------------------------------------------------------------ */

/*
 * Rota Bulo, Porzi and Kontschieder (CVPR 2018): when batch norm is followed
 * by an invertible activation and its scale gamma is nonzero, the output
 * y = act(BN(x)) alone gives the backward everything it needs, so a network
 * need not keep x (often the output of a convolution) for it: with
 *   z    = act^-1(y),  xhat = (z - beta) / gamma,  g = dy * act'(z)
 * (and with a residual added before the activation, y = act(BN(x) + r),
 * z = act^-1(y) - r and the residual's gradient g)
 * per channel over its m values,
 *   dbias   = sum(g),   dweight = sum(g * xhat)     (the gradient of gamma)
 *   dx      = gamma * invstd * (g - dbias / m - xhat * dweight / m)
 * or dx = gamma * invstd * g with BNORM_FLAG_FROZEN_STATS. The activations
 * (with their parameter a):
 */
#define BNORM_ACT_IDENTITY   0 /* y = z                                    */
#define BNORM_ACT_LEAKY_RELU 2 /* y = z > 0 ? z : a * z, a > 0             */
#define BNORM_ACT_ELU        3 /* y = z > 0 ? z : a * (exp(z) - 1), a > 0  */
/* act'(z) is read from y: 1 where y > 0, else a (leaky ReLU) or y + a (ELU,
 * a * exp(z)), as PyTorch's leaky_relu and elu backward from their result
 * do. (The value 1 is left for the ReLU, which has no inverse.) */

/*
 * The backward of y = act(BN(x) + residual) from y (the residual is
 * optional: y = act(BN(x))).
 *
 *   dy, y                outer*channels*inner elements of dtype: the
 *                        gradient and the forward's output.
 *   residual             the forward's residual input (as many elements), or
 *                        NULL for none: then z = act^-1(y) - residual.
 *   invstd               the forward's 1/sqrt(var + eps) (save_invstd of
 *                        bnorm_forward_training; or of the running variance
 *                        with BNORM_FLAG_FROZEN_STATS), `channels` values.
 *   weight, bias         gamma and beta of the forward, or NULL for 1 and 0;
 *                        every gamma nonzero and finite (In-Place ABN uses
 *                        |weight| + eps).
 *   dx, dresidual        outputs, each or both NULL: dx, and the residual's
 *                        gradient g (with a residual only). Each may be
 *                        exactly dy, y or residual (in place), not the same
 *                        one as the other.
 *   dweight, dbias       outputs (the gradients of gamma and beta), or NULL;
 *                        they overlap no other buffer.
 *   activation, param    BNORM_ACT_IDENTITY (param ignored), _LEAKY_RELU or
 *                        _ELU with param > 0 and finite.
 *   flags                0 or BNORM_FLAG_FROZEN_STATS.
 *
 * Errors: NULL_POINTER (dy, y or invstd), INVALID_SIZE, UNSUPPORTED_DTYPE,
 * TOO_FEW_VALUES (training mode, m <= 1 or no channels), INVALID_FLAGS,
 * INVALID_ARGUMENT (an unknown activation, a parameter that is not > 0, a
 * gamma that is 0 or not finite), OVERLAP, OUT_OF_MEMORY.
 * bnorm_backward_from_output_ws (below) takes a caller-owned workspace.
 */
BNORM_API bnorm_status bnorm_backward_from_output(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *y, const void *residual, const void *invstd,
    const void *weight, const void *bias, void *dx, void *dresidual, void *dweight,
    void *dbias, int32_t activation, double param, uint32_t flags);

/* ------------------------------------------------------------------------ */
/* Inference helpers                                                        */
/* ------------------------------------------------------------------------ */

/*
 * Per-channel coefficients of the inference forward pass:
 *   scale[c] = gamma[c] / sqrt(var[c] + eps)
 *   shift[c] = beta[c] - mean[c] * scale[c]
 * so that y = x * scale + shift (for runtimes with their own fused kernels).
 * Computed in double and rounded once. Allocates nothing.
 *
 *   mean, var            `channels` parameter-type values (required).
 *   weight, bias         gamma and beta, or NULL for 1 and 0.
 *   scale, shift         outputs, `channels` values each. Each may be
 *                        exactly mean, var, weight or bias (in place), not
 *                        the same one as the other; they never share memory.
 *
 * Errors: NULL_POINTER, INVALID_SIZE, UNSUPPORTED_DTYPE, INVALID_EPS,
 * OVERLAP.
 */
BNORM_API bnorm_status bnorm_inference_scale_shift(
    bnorm_dtype dtype, int64_t channels, const void *mean, const void *var,
    const void *weight, const void *bias, double eps, void *scale,
    void *shift);

/*
 * Folds an inference-mode batch norm into the convolution or linear layer
 * that feeds it, so the pair becomes one layer:
 *   a[c]            = gamma[c] / sqrt(var[c] + eps)
 *   folded_weight   = layer_weight * a[c]   (every weight of output channel c)
 *   folded_bias[c]  = (layer_bias[c] - mean[c]) * a[c] + beta[c]
 * computed in double and rounded once.
 *
 * The layer's weight is viewed as [outer, channels, inner] with `channels`
 * its output channels, like the data above:
 *     linear [out, in], conv [out, in, kh, kw]   outer = 1,  inner = the rest
 *     transposed conv [in, out, kh, kw]           outer = in, inner = kh*kw
 *     channels-last conv [kh, kw, in, out]        outer = kh*kw*in, inner = 1
 *
 *   layer_weight         outer*channels*inner values (required).
 *   layer_bias           `channels` values, or NULL for a layer without bias.
 *   mean, var            the batch norm's statistics (required).
 *   weight, bias         its gamma and beta, or NULL for 1 and 0.
 *   folded_weight        output like layer_weight; may be exactly
 *                        layer_weight (in place).
 *   folded_bias          output, `channels` values (required, since the
 *                        folded layer has a bias); may be exactly layer_bias.
 *                        Neither output may overlap any other buffer.
 *
 * Errors: NULL_POINTER, INVALID_SIZE, UNSUPPORTED_DTYPE, INVALID_EPS,
 * OVERLAP (any other overlap of an output with an input or the other output).
 */
BNORM_API bnorm_status bnorm_fold_into_layer(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *layer_weight, const void *layer_bias, const void *mean,
    const void *var, const void *weight, const void *bias, double eps,
    void *folded_weight, void *folded_bias);

/* ------------------------------------------------------------------------ */
/* Statistics across processes (synchronized batch norm)                    */
/* ------------------------------------------------------------------------ */

/*
 * When one batch is split into shards over several processes, its
 * statistics are those of the whole batch. bnorm_forward_training and
 * bnorm_backward split into phases with a data exchange between them (the
 * transport is the caller's: MPI, a collective library, files):
 *
 *   forward:   bnorm_moments            on the local shard
 *              exchange (count, mean, m2) of every shard
 *              bnorm_merge_moments      the same list, in the same order,
 *                                       on every process: the same bits
 *              bnorm_forward_normalize  the local shard, global statistics
 *   backward:  bnorm_backward_reduce    on the local shard
 *              exchange and add (sum_dy, sum_dy_xmu) in a fixed order
 *              bnorm_backward_apply     the local dx, global sums and count
 *
 * Statistics travel as double whatever the data type. With one shard the
 * phases give bitwise the results of bnorm_forward_training and
 * bnorm_backward. A shard may be empty (no values per channel).
 */

/*
 * Per-channel moments of a shard: its count = outer * inner values per
 * channel, mean[c] and m2[c] = sum((x - mean[c])^2), computed as
 * bnorm_forward_training computes them (same accuracy for data far from
 * zero). An empty shard gives mean 0 and m2 0.
 *
 *   x                    outer*channels*inner elements of dtype.
 *   mean, m2             outputs, `channels` doubles each; they overlap no
 *                        other buffer.
 *
 * Errors: NULL_POINTER, INVALID_SIZE, UNSUPPORTED_DTYPE, OVERLAP,
 * OUT_OF_MEMORY.
 */
BNORM_API bnorm_status bnorm_moments(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, double *mean, double *m2);

/*
 * Merges `parts` shards' moments (Chan, Golub and LeVeque's pairwise
 * formula, as a balanced binary tree over the parts in index order, so that
 * rounding errors grow with log2(parts)): part k has counts[k] values per
 * channel and means[k * channels + c], m2s[k * channels + c]. Writes the
 * total count and the merged mean and m2 per channel. Shards with count 0
 * are skipped. Deterministic: the same list in the same order gives the
 * same bits.
 *
 *   counts               `parts` values >= 0, their sum must fit in int64.
 *   means, m2s           parts * channels doubles each.
 *   count, mean, m2      outputs: 1, `channels`, `channels` values; none may
 *                        overlap an input or another output.
 *
 * Errors: NULL_POINTER, INVALID_SIZE (negative parts or channels, or a size
 * that overflows), INVALID_ARGUMENT (a negative count, or counts that
 * overflow), OVERLAP.
 */
BNORM_API bnorm_status bnorm_merge_moments(
    int64_t parts, int64_t channels, const int64_t *counts,
    const double *means, const double *m2s, int64_t *count, double *mean,
    double *m2);

/*
 * The normalization phase of training with statistics given: the moments
 * of the whole batch (count values per channel, mean, m2 from
 * bnorm_merge_moments). Writes y for the local shard x exactly as
 * bnorm_forward_training would with those statistics (var = m2 / count,
 * biased), the saved statistics, and the running-statistics update with
 * the global unbiased variance var * count / (count - 1).
 *
 *   x, y                 the local shard (may be empty); y may be exactly
 *                        x (in place).
 *   count                values per channel in the whole batch: > 1, and at
 *                        least the shard's outer * inner.
 *   mean, m2             `channels` doubles each.
 *   other arguments      as for bnorm_forward_training.
 *
 * Errors: NULL_POINTER, INVALID_SIZE, UNSUPPORTED_DTYPE, INVALID_EPS,
 * INVALID_MOMENTUM, TOO_FEW_VALUES (count <= 1 or channels == 0),
 * INVALID_FLAGS, INVALID_ARGUMENT (only one running statistic; count below
 * the shard's), OVERLAP, OUT_OF_MEMORY.
 */
BNORM_API bnorm_status bnorm_forward_normalize(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, void *y, int64_t count, const double *mean,
    const double *m2, const void *weight, const void *bias, void *save_mean,
    void *save_invstd, void *running_mean, void *running_var, double eps,
    double momentum, uint32_t flags);

/*
 * The reduction phase of backward on a shard: per channel
 *   sum_dy[c] = sum(dy),   sum_dy_xmu[c] = sum(dy * (x - mean[c])),
 * in double, as bnorm_backward forms them. An empty shard gives zeros.
 *
 *   dy, x                outer*channels*inner elements of dtype.
 *   mean                 save_mean of the forward pass (parameter type).
 *   sum_dy, sum_dy_xmu   outputs, `channels` doubles each; they overlap
 *                        no other buffer.
 *
 * Errors: NULL_POINTER, INVALID_SIZE, UNSUPPORTED_DTYPE, OVERLAP,
 * OUT_OF_MEMORY.
 */
BNORM_API bnorm_status bnorm_backward_reduce(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *x, const void *mean, double *sum_dy,
    double *sum_dy_xmu);

/*
 * The elementwise phase of backward with the sums of the whole batch (added
 * over the shards) and its count: dx for the local shard,
 *   dx = gamma * invstd * (dy - sum_dy/count - (x - mean) * invstd^2 * sum_dy_xmu/count),
 * and dweight = sum_dy_xmu * invstd, dbias = sum_dy (the whole batch's).
 *
 *   dy, x                the local shard (may be empty).
 *   mean, invstd         save_mean and save_invstd of the forward pass.
 *   weight               gamma, or NULL for 1.
 *   sum_dy, sum_dy_xmu   `channels` doubles each: the global sums.
 *   count                values per channel in the whole batch: > 1, and at
 *                        least the shard's outer * inner.
 *   dx, dweight, dbias   outputs, or NULL to skip; dx may be exactly dy or
 *                        exactly x (in place); dweight and dbias overlap no
 *                        other buffer.
 *
 * Errors: NULL_POINTER, INVALID_SIZE, UNSUPPORTED_DTYPE, TOO_FEW_VALUES
 * (count <= 1), INVALID_ARGUMENT (count below the shard's), OVERLAP,
 * OUT_OF_MEMORY.
 */
BNORM_API bnorm_status bnorm_backward_apply(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *x, const void *mean, const void *invstd,
    const void *weight, const double *sum_dy, const double *sum_dy_xmu,
    int64_t count, void *dx, void *dweight, void *dbias);

/* ------------------------------------------------------------------------ */
/* Caller-owned workspace (since 0.3)                                       */
/* ------------------------------------------------------------------------ */

/*
 * The training, backward and split-phase entry points need scratch memory:
 * partial sums of the reductions and per-channel coefficients, a few times
 * `channels` doubles, plus a little per thread for channels-last tensors.
 * The entry points above allocate it per call. The _ws forms below take it
 * from the caller: the same arguments, then
 *
 *   workspace            a block of at least the bytes bnorm_workspace_size
 *                        reports for the call (any alignment), or NULL to
 *                        let bnorm allocate as the entry point without _ws
 *                        does. Its contents need no initialization and are
 *                        unspecified afterwards; it overlaps no other
 *                        buffer of the call (OVERLAP).
 *   workspace_bytes      its size in bytes.
 *
 * A _ws call with a large enough workspace allocates nothing and gives
 * bitwise the results of the entry point without _ws. A smaller one is
 * refused with BNORM_ERROR_WORKSPACE_TOO_SMALL before anything is written.
 * One workspace serves any number of calls in turn, not two at once.
 */

/* The operations bnorm_workspace_size knows. */
#define BNORM_OP_FORWARD_TRAINING  1 /* bnorm_forward_training(_fused/_ws) */
#define BNORM_OP_BACKWARD          2 /* bnorm_backward(_fused/_ws)         */
#define BNORM_OP_MOMENTS           3 /* bnorm_moments(_ws)                 */
#define BNORM_OP_FORWARD_NORMALIZE 4 /* bnorm_forward_normalize(_ws)       */
#define BNORM_OP_BACKWARD_REDUCE   5 /* bnorm_backward_reduce(_ws)         */
#define BNORM_OP_BACKWARD_APPLY    6 /* bnorm_backward_apply(_ws)          */
#define BNORM_OP_FORWARD_INFERENCE 7 /* always 0 bytes: none is needed     */
#define BNORM_OP_BACKWARD_FROM_OUTPUT 8 /* bnorm_backward_from_output (0.4) */

/*
 * Writes into *bytes the workspace that operation `op` needs on a tensor
 * [outer, channels, inner] of `dtype` when it runs on `threads` threads
 * (0 or less: the current bnorm_get_num_threads(), or the host pool's
 * thread count). The size depends on these alone -- not on the data, the
 * flags or the CPU -- and is at most a few times channels * 8 bytes plus
 * threads * (3 * channels + 16) * 8 bytes. A call needs the size for the
 * thread count it runs on: query again after raising the thread count.
 *
 * Errors: NULL_POINTER (bytes), INVALID_SIZE, UNSUPPORTED_DTYPE,
 * INVALID_ARGUMENT (an unknown op).
 */
BNORM_API bnorm_status bnorm_workspace_size(
    int32_t op, bnorm_dtype dtype, int64_t outer, int64_t channels,
    int64_t inner, int32_t threads, size_t *bytes);

/* bnorm_forward_training_fused with a caller-owned workspace. */
BNORM_API bnorm_status bnorm_forward_training_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, const void *residual, void *y, const void *weight,
    const void *bias, void *save_mean, void *save_invstd, void *running_mean,
    void *running_var, double eps, double momentum, uint32_t flags,
    void *workspace, size_t workspace_bytes);

/* bnorm_backward_fused with a caller-owned workspace. */
BNORM_API bnorm_status bnorm_backward_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *x, const void *y, const void *mean,
    const void *invstd, const void *weight, const void *bias, void *dx,
    void *dweight, void *dbias, void *dresidual, uint32_t flags,
    void *workspace, size_t workspace_bytes);

/* bnorm_backward_from_output with a caller-owned workspace (since 0.4). */
BNORM_API bnorm_status bnorm_backward_from_output_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *y, const void *residual, const void *invstd,
    const void *weight, const void *bias, void *dx, void *dresidual, void *dweight,
    void *dbias, int32_t activation, double param, uint32_t flags, void *workspace, size_t workspace_bytes);

/* bnorm_moments with a caller-owned workspace. */
BNORM_API bnorm_status bnorm_moments_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, double *mean, double *m2, void *workspace,
    size_t workspace_bytes);

/* bnorm_forward_normalize with a caller-owned workspace. */
BNORM_API bnorm_status bnorm_forward_normalize_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *x, void *y, int64_t count, const double *mean,
    const double *m2, const void *weight, const void *bias, void *save_mean,
    void *save_invstd, void *running_mean, void *running_var, double eps,
    double momentum, uint32_t flags, void *workspace, size_t workspace_bytes);

/* bnorm_backward_reduce with a caller-owned workspace. */
BNORM_API bnorm_status bnorm_backward_reduce_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *x, const void *mean, double *sum_dy,
    double *sum_dy_xmu, void *workspace, size_t workspace_bytes);

/* bnorm_backward_apply with a caller-owned workspace. */
BNORM_API bnorm_status bnorm_backward_apply_ws(
    bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
    const void *dy, const void *x, const void *mean, const void *invstd,
    const void *weight, const double *sum_dy, const double *sum_dy_xmu,
    int64_t count, void *dx, void *dweight, void *dbias, void *workspace,
    size_t workspace_bytes);

/* ------------------------------------------------------------------------ */
/* Population statistics (the paper's Algorithm 2, steps 8-12)              */
/* ------------------------------------------------------------------------ */

/*
 * After training, the inference network normalizes with population
 * statistics over training batches B of m values per channel:
 *     E[x]   = mean over B of mean_B
 *     Var[x] = m/(m-1) * mean over B of var_B      (var_B biased)
 * Batches of unequal size m_B are weighted by size:
 *     E[x]   = sum(m_B * mean_B) / sum(m_B)
 *     Var[x] = sum(m_B * var_B * m_B/(m_B-1)) / sum(m_B)
 * (for equal sizes these are the two lines above). Note that Var[x] is the
 * mean within-batch variance, not the variance of all values pooled.
 *
 * An accumulator is BNORM_POPULATION_STATE_SIZE(channels) doubles of the
 * caller's memory, initialized by bnorm_population_init; its layout is
 * private (it may change with the major version). Sums are kept as
 * deviations from the first batch's means, with compensated (Neumaier)
 * additions, so millions of batches far from zero keep full precision.
 */
#define BNORM_POPULATION_STATE_SIZE(channels) (5 * (int64_t)(channels) + 4)

/* Starts an empty accumulator for `channels` channels.
 * Errors: NULL_POINTER, INVALID_SIZE. */
BNORM_API bnorm_status bnorm_population_init(int64_t channels, double *state);

/*
 * Folds in one batch: count = m values per channel (> 1), its per-channel
 * mean and m2 = sum((x - mean)^2) (from bnorm_moments, or one's own).
 * Errors: NULL_POINTER, INVALID_SIZE, TOO_FEW_VALUES (count <= 1),
 * INVALID_ARGUMENT (a state that was not initialized for this channel
 * count, or a total of values above 2^53, where the counts, kept in
 * doubles, would stop being exact), OVERLAP (state overlapping mean or m2).
 */
BNORM_API bnorm_status bnorm_population_add(int64_t channels, double *state,
                                            int64_t count, const double *mean,
                                            const double *m2);

/* Folds accumulator `other` (of shards of the data, say) into `state`,
 * which must not overlap it.
 * Errors: NULL_POINTER, INVALID_SIZE, INVALID_ARGUMENT (either state not
 * initialized for this channel count, or totals above 2^53), OVERLAP. */
BNORM_API bnorm_status bnorm_population_merge(int64_t channels, double *state,
                                              const double *other);

/*
 * The population statistics so far: E[x] into mean and Var[x] into var
 * (`channels` doubles each; either may be NULL), the number of batches
 * into *batches and of values per channel into *values (either may be
 * NULL). With no batch yet, mean is 0 and var is 1 (a fresh running
 * variance). The outputs overlap neither the state nor one another.
 * Errors: NULL_POINTER (state), INVALID_SIZE, INVALID_ARGUMENT, OVERLAP.
 */
BNORM_API bnorm_status bnorm_population_result(int64_t channels,
                                               const double *state,
                                               int64_t *batches,
                                               int64_t *values, double *mean,
                                               double *var);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BNORM_BNORM_H */
