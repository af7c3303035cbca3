# The C API of bnorm/bnorm.h, declared once for Cython. Every function is
# safe to call without the GIL.
from libc.stdint cimport int32_t, int64_t, uint32_t

cdef extern from "bnorm/bnorm.h" nogil:
    ctypedef int32_t bnorm_status
    ctypedef int32_t bnorm_dtype

    int BNORM_VERSION_MAJOR
    int BNORM_VERSION_MINOR
    int BNORM_VERSION_PATCH

    bnorm_status BNORM_OK
    bnorm_status BNORM_ERROR_NULL_POINTER
    bnorm_status BNORM_ERROR_INVALID_SIZE
    bnorm_status BNORM_ERROR_UNSUPPORTED_DTYPE
    bnorm_status BNORM_ERROR_INVALID_EPS
    bnorm_status BNORM_ERROR_INVALID_MOMENTUM
    bnorm_status BNORM_ERROR_TOO_FEW_VALUES
    bnorm_status BNORM_ERROR_INVALID_FLAGS
    bnorm_status BNORM_ERROR_OVERLAP
    bnorm_status BNORM_ERROR_OUT_OF_MEMORY
    bnorm_status BNORM_ERROR_INVALID_ARGUMENT
    bnorm_status BNORM_ERROR_INTERNAL
    bnorm_status BNORM_ERROR_WORKSPACE_TOO_SMALL

    int64_t BNORM_POPULATION_STATE_SIZE(int64_t channels)

    const char *bnorm_kernel_isa()
    const char *bnorm_threading_backend()

    bnorm_dtype BNORM_FLOAT32
    bnorm_dtype BNORM_FLOAT64
    bnorm_dtype BNORM_FLOAT16
    bnorm_dtype BNORM_BFLOAT16

    uint32_t BNORM_FLAG_BIASED_RUNNING_VAR
    uint32_t BNORM_FLAG_FROZEN_STATS
    uint32_t BNORM_FLAG_RELU
    uint32_t BNORM_FLAG_RELU6

    const char *bnorm_status_string(bnorm_status status)
    int bnorm_version_number()
    const char *bnorm_version_string()
    void bnorm_set_num_threads(int n)
    int bnorm_get_num_threads()

    bnorm_status bnorm_forward_training(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *x, void *y, const void *weight, const void *bias,
        void *save_mean, void *save_invstd,
        void *running_mean, void *running_var,
        double eps, double momentum, uint32_t flags)

    bnorm_status bnorm_forward_inference(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *x, void *y, const void *mean, const void *var,
        const void *weight, const void *bias, double eps)

    bnorm_status bnorm_backward(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *dy, const void *x, const void *mean, const void *invstd,
        const void *weight, void *dx, void *dweight, void *dbias,
        uint32_t flags)

    bnorm_status bnorm_inference_scale_shift(
        bnorm_dtype dtype, int64_t channels, const void *mean, const void *var,
        const void *weight, const void *bias, double eps, void *scale,
        void *shift)

    bnorm_status bnorm_fold_into_layer(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *layer_weight, const void *layer_bias, const void *mean,
        const void *var, const void *weight, const void *bias, double eps,
        void *folded_weight, void *folded_bias)

    bnorm_status bnorm_moments(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *x, double *mean, double *m2)

    bnorm_status bnorm_merge_moments(
        int64_t parts, int64_t channels, const int64_t *counts,
        const double *means, const double *m2s, int64_t *count, double *mean,
        double *m2)

    bnorm_status bnorm_forward_normalize(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *x, void *y, int64_t count, const double *mean,
        const double *m2, const void *weight, const void *bias, void *save_mean,
        void *save_invstd, void *running_mean, void *running_var, double eps,
        double momentum, uint32_t flags)

    bnorm_status bnorm_backward_reduce(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *dy, const void *x, const void *mean, double *sum_dy,
        double *sum_dy_xmu)

    bnorm_status bnorm_backward_apply(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *dy, const void *x, const void *mean, const void *invstd,
        const void *weight, const double *sum_dy, const double *sum_dy_xmu,
        int64_t count, void *dx, void *dweight, void *dbias)

    bnorm_status bnorm_population_init(int64_t channels, double *state)
    bnorm_status bnorm_population_add(int64_t channels, double *state,
                                      int64_t count, const double *mean,
                                      const double *m2)
    bnorm_status bnorm_population_merge(int64_t channels, double *state,
                                        const double *other)
    bnorm_status bnorm_population_result(int64_t channels, const double *state,
                                         int64_t *batches, int64_t *values,
                                         double *mean, double *var)

    bnorm_status bnorm_forward_training_fused(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *x, const void *residual, void *y, const void *weight,
        const void *bias, void *save_mean, void *save_invstd, void *running_mean,
        void *running_var, double eps, double momentum, uint32_t flags)

    bnorm_status bnorm_forward_inference_fused(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *x, const void *residual, void *y, const void *mean,
        const void *var, const void *weight, const void *bias, double eps,
        uint32_t flags)

    int32_t BNORM_ACT_IDENTITY
    int32_t BNORM_ACT_LEAKY_RELU
    int32_t BNORM_ACT_ELU

    bnorm_status bnorm_backward_from_output(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *dy, const void *y, const void *residual, const void *invstd,
        const void *weight, const void *bias, void *dx, void *dresidual, void *dweight,
        void *dbias, int32_t activation, double param, uint32_t flags)

    bnorm_status bnorm_backward_fused(
        bnorm_dtype dtype, int64_t outer, int64_t channels, int64_t inner,
        const void *dy, const void *x, const void *y, const void *mean,
        const void *invstd, const void *weight, const void *bias, void *dx,
        void *dweight, void *dbias, void *dresidual, uint32_t flags)
