# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin bindings to the C API of libbnorm.

The public functions in ``bnorm._functional`` check and shape the arguments;
this module re-checks what memory safety depends on (dtype, contiguity,
size, writability), releases the GIL around the C call, and turns status
codes into exceptions in one place, ``_check``.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t, uint32_t

from bnorm._bnorm cimport *

cnp.import_array()


class BnormError(Exception):
    """An error reported by the bnorm C library (``status`` holds its code)."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class BnormValueError(BnormError, ValueError):
    """An argument the C library refused (a size, an overlap, a flag...)."""


class BnormTypeError(BnormError, TypeError):
    """A data type the C library does not support."""


class BnormMemoryError(BnormError, MemoryError):
    """The C library could not allocate its scratch memory."""


class BnormInternalError(BnormError, RuntimeError):
    """A failure inside bnorm that it contained: a bug, please report it."""


class BnormUnknownStatusError(BnormError):
    """A status code this version of the bindings does not know (a newer
    library than the bindings were built for)."""


# Each status code of bnorm.h and the exception it raises.
_ERRORS = {
    BNORM_ERROR_NULL_POINTER: BnormValueError,
    BNORM_ERROR_INVALID_SIZE: BnormValueError,
    BNORM_ERROR_UNSUPPORTED_DTYPE: BnormTypeError,
    BNORM_ERROR_INVALID_EPS: BnormValueError,
    BNORM_ERROR_INVALID_MOMENTUM: BnormValueError,
    BNORM_ERROR_TOO_FEW_VALUES: BnormValueError,
    BNORM_ERROR_INVALID_FLAGS: BnormValueError,
    BNORM_ERROR_OVERLAP: BnormValueError,
    BNORM_ERROR_OUT_OF_MEMORY: BnormMemoryError,
    BNORM_ERROR_INVALID_ARGUMENT: BnormValueError,
    BNORM_ERROR_INTERNAL: BnormInternalError,
    BNORM_ERROR_WORKSPACE_TOO_SMALL: BnormValueError,
}


def status_string(int status):
    return bnorm_status_string(status).decode()


def error_for(int status, str op):
    """The exception for a failed call of op with this status code."""
    msg = f"{op}: {bnorm_status_string(status).decode()} (bnorm status {status})"
    return _ERRORS.get(status, BnormUnknownStatusError)(msg, status)


cdef int _check(bnorm_status status, str op) except -1:
    if status == BNORM_OK:
        return 0
    raise error_for(status, op)


cdef bnorm_dtype _dtype_code(cnp.ndarray a) except -1:
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT32:
        return BNORM_FLOAT32
    if t == cnp.NPY_FLOAT64:
        return BNORM_FLOAT64
    if t == cnp.NPY_FLOAT16:
        return BNORM_FLOAT16
    if a.dtype.name == "bfloat16" and a.dtype.itemsize == 2:  # ml_dtypes'
        return BNORM_BFLOAT16
    raise TypeError(f"unsupported dtype {a.dtype}; expected float32, float64, "
                    "float16 or bfloat16")


cdef inline int _param_type(int t):
    """Parameters and statistics: float64 for float64 data, else float32."""
    return cnp.NPY_FLOAT64 if t == cnp.NPY_FLOAT64 else cnp.NPY_FLOAT32


cdef void* _buf(object obj, int64_t n, int typenum, bint writable,
                str name) except? NULL:
    """Data pointer of a C-contiguous array of n elements of typenum, or NULL
    for None. Anything else raises: these checks are what keep a wrong call
    from reading or writing out of bounds."""
    if obj is None:
        return NULL
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{name} must be a numpy.ndarray")
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(a) != typenum:
        raise TypeError(f"{name} has dtype {a.dtype}, expected "
                        f"{cnp.PyArray_DescrFromType(typenum)}")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"{name} has dtype {a.dtype.str}: not in native byte order")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} must be C-contiguous")
    if cnp.PyArray_SIZE(a) != n:
        raise ValueError(f"{name} has {cnp.PyArray_SIZE(a)} elements, expected {n}")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} is read-only")
    return cnp.PyArray_DATA(a)


def version_string():
    return bnorm_version_string().decode()


def version_number():
    return bnorm_version_number()


def kernel_isa():
    return bnorm_kernel_isa().decode()


def threading_backend():
    return bnorm_threading_backend().decode()


def set_num_threads(int n):
    bnorm_set_num_threads(n)


def get_num_threads():
    return bnorm_get_num_threads()


def forward_training(cnp.ndarray x, cnp.ndarray y, int64_t outer,
                     int64_t channels, int64_t inner, weight, bias,
                     save_mean, save_invstd, running_mean, running_var,
                     double eps, double momentum, bint unbiased,
                     residual=None, bint relu=False):
    cdef bnorm_dtype dt = _dtype_code(x)
    cdef int t = cnp.PyArray_TYPE(x)
    cdef int pt = _param_type(t)
    cdef int64_t n = outer * channels * inner
    cdef const void* px = _buf(x, n, t, False, "x")
    cdef void* py = _buf(y, n, t, True, "out")
    cdef const void* pw = _buf(weight, channels, pt, False, "weight")
    cdef const void* pb = _buf(bias, channels, pt, False, "bias")
    cdef void* psm = _buf(save_mean, channels, pt, True, "save_mean")
    cdef void* psi = _buf(save_invstd, channels, pt, True, "save_invstd")
    cdef void* prm = _buf(running_mean, channels, pt, True, "running_mean")
    cdef void* prv = _buf(running_var, channels, pt, True, "running_var")
    cdef const void* pz = _buf(residual, n, t, False, "residual")
    cdef uint32_t flags = 0 if unbiased else BNORM_FLAG_BIASED_RUNNING_VAR
    if relu:
        flags |= BNORM_FLAG_RELU
    cdef bnorm_status st
    with nogil:
        st = bnorm_forward_training_fused(dt, outer, channels, inner, px, pz, py,
                                          pw, pb, psm, psi, prm, prv, eps,
                                          momentum, flags)
    _check(st, "batch norm training forward")


def forward_inference(cnp.ndarray x, cnp.ndarray y, int64_t outer,
                      int64_t channels, int64_t inner, mean, var, weight,
                      bias, double eps, residual=None, bint relu=False):
    cdef bnorm_dtype dt = _dtype_code(x)
    cdef int t = cnp.PyArray_TYPE(x)
    cdef int pt = _param_type(t)
    cdef int64_t n = outer * channels * inner
    cdef const void* px = _buf(x, n, t, False, "x")
    cdef void* py = _buf(y, n, t, True, "out")
    cdef const void* pm = _buf(mean, channels, pt, False, "running_mean")
    cdef const void* pv = _buf(var, channels, pt, False, "running_var")
    cdef const void* pw = _buf(weight, channels, pt, False, "weight")
    cdef const void* pb = _buf(bias, channels, pt, False, "bias")
    cdef const void* pz = _buf(residual, n, t, False, "residual")
    cdef uint32_t flags = BNORM_FLAG_RELU if relu else 0
    cdef bnorm_status st
    with nogil:
        st = bnorm_forward_inference_fused(dt, outer, channels, inner, px, pz, py,
                                           pm, pv, pw, pb, eps, flags)
    _check(st, "batch norm inference forward")


def backward(cnp.ndarray dy, cnp.ndarray x, int64_t outer, int64_t channels,
             int64_t inner, mean, invstd, weight, dx, dweight, dbias,
             bint frozen, y=None, bias=None, dresidual=None, bint relu=False):
    cdef bnorm_dtype dt = _dtype_code(x)
    cdef int t = cnp.PyArray_TYPE(x)
    cdef int pt = _param_type(t)
    cdef int64_t n = outer * channels * inner
    cdef const void* pdy = _buf(dy, n, t, False, "dy")
    cdef const void* px = _buf(x, n, t, False, "x")
    cdef const void* pm = _buf(mean, channels, pt, False, "save_mean")
    cdef const void* pi = _buf(invstd, channels, pt, False, "save_invstd")
    cdef const void* pw = _buf(weight, channels, pt, False, "weight")
    cdef void* pdx = _buf(dx, n, t, True, "out")
    cdef void* pdw = _buf(dweight, channels, pt, True, "dweight")
    cdef void* pdb = _buf(dbias, channels, pt, True, "dbias")
    cdef const void* py = _buf(y, n, t, False, "y")
    cdef const void* pb = _buf(bias, channels, pt, False, "bias")
    cdef void* pdz = _buf(dresidual, n, t, True, "dresidual")
    cdef uint32_t flags = BNORM_FLAG_FROZEN_STATS if frozen else 0
    if relu:
        flags |= BNORM_FLAG_RELU
    cdef bnorm_status st
    with nogil:
        st = bnorm_backward_fused(dt, outer, channels, inner, pdy, px, py, pm, pi,
                                  pw, pb, pdx, pdw, pdb, pdz, flags)
    _check(st, "batch norm backward")


def inference_scale_shift(mean, var, weight, bias, double eps, scale, shift):
    cdef cnp.ndarray m = mean
    cdef bnorm_dtype dt = _dtype_code(m)
    cdef int t = cnp.PyArray_TYPE(m)
    cdef int64_t c = cnp.PyArray_SIZE(m)
    cdef const void* pm = _buf(mean, c, t, False, "running_mean")
    cdef const void* pv = _buf(var, c, t, False, "running_var")
    cdef const void* pw = _buf(weight, c, t, False, "weight")
    cdef const void* pb = _buf(bias, c, t, False, "bias")
    cdef void* ps = _buf(scale, c, t, True, "scale")
    cdef void* psh = _buf(shift, c, t, True, "shift")
    cdef bnorm_status st
    with nogil:
        st = bnorm_inference_scale_shift(dt, c, pm, pv, pw, pb, eps, ps, psh)
    _check(st, "inference scale/shift")


def fold_into_layer(cnp.ndarray layer_weight, layer_bias, int64_t outer,
                    int64_t channels, int64_t inner, mean, var, weight, bias,
                    double eps, folded_weight, folded_bias):
    cdef bnorm_dtype dt = _dtype_code(layer_weight)
    cdef int t = cnp.PyArray_TYPE(layer_weight)
    cdef int64_t n = outer * channels * inner
    cdef const void* plw = _buf(layer_weight, n, t, False, "layer_weight")
    cdef const void* plb = _buf(layer_bias, channels, t, False, "layer_bias")
    cdef const void* pm = _buf(mean, channels, t, False, "running_mean")
    cdef const void* pv = _buf(var, channels, t, False, "running_var")
    cdef const void* pw = _buf(weight, channels, t, False, "weight")
    cdef const void* pb = _buf(bias, channels, t, False, "bias")
    cdef void* pfw = _buf(folded_weight, n, t, True, "folded_weight")
    cdef void* pfb = _buf(folded_bias, channels, t, True, "folded_bias")
    cdef bnorm_status st
    with nogil:
        st = bnorm_fold_into_layer(dt, outer, channels, inner, plw, plb, pm, pv,
                                   pw, pb, eps, pfw, pfb)
    _check(st, "fold batch norm into layer")


# Split phases for statistics spanning several processes (bnorm.distributed).
# Statistics and sums are float64 arrays whatever the data dtype.

def moments(cnp.ndarray x, int64_t outer, int64_t channels, int64_t inner,
            mean, m2):
    cdef bnorm_dtype dt = _dtype_code(x)
    cdef int t = cnp.PyArray_TYPE(x)
    cdef int pt = _param_type(t)
    cdef const void* px = _buf(x, outer * channels * inner, t, False, "x")
    cdef double* pm = <double*>_buf(mean, channels, cnp.NPY_FLOAT64, True, "mean")
    cdef double* pq = <double*>_buf(m2, channels, cnp.NPY_FLOAT64, True, "m2")
    cdef bnorm_status st
    with nogil:
        st = bnorm_moments(dt, outer, channels, inner, px, pm, pq)
    _check(st, "batch moments")


def merge_moments(counts, means, m2s, count, mean, m2):
    cdef cnp.ndarray c = counts
    cdef int64_t parts = cnp.PyArray_SIZE(c)
    cdef int64_t channels = cnp.PyArray_SIZE(<cnp.ndarray>mean)
    cdef const int64_t* pc = <const int64_t*>_buf(counts, parts, cnp.NPY_INT64, False, "counts")
    cdef const double* pms = <const double*>_buf(means, parts * channels, cnp.NPY_FLOAT64, False, "means")
    cdef const double* pqs = <const double*>_buf(m2s, parts * channels, cnp.NPY_FLOAT64, False, "m2s")
    cdef int64_t* pn = <int64_t*>_buf(count, 1, cnp.NPY_INT64, True, "count")
    cdef double* pm = <double*>_buf(mean, channels, cnp.NPY_FLOAT64, True, "mean")
    cdef double* pq = <double*>_buf(m2, channels, cnp.NPY_FLOAT64, True, "m2")
    cdef bnorm_status st
    with nogil:
        st = bnorm_merge_moments(parts, channels, pc, pms, pqs, pn, pm, pq)
    _check(st, "merge moments")


def forward_normalize(cnp.ndarray x, cnp.ndarray y, int64_t outer,
                      int64_t channels, int64_t inner, int64_t count, mean, m2,
                      weight, bias, save_mean, save_invstd, running_mean,
                      running_var, double eps, double momentum, bint unbiased):
    cdef bnorm_dtype dt = _dtype_code(x)
    cdef int t = cnp.PyArray_TYPE(x)
    cdef int pt = _param_type(t)
    cdef int64_t n = outer * channels * inner
    cdef const void* px = _buf(x, n, t, False, "x")
    cdef void* py = _buf(y, n, t, True, "out")
    cdef const double* pm = <const double*>_buf(mean, channels, cnp.NPY_FLOAT64, False, "mean")
    cdef const double* pq = <const double*>_buf(m2, channels, cnp.NPY_FLOAT64, False, "m2")
    cdef const void* pw = _buf(weight, channels, pt, False, "weight")
    cdef const void* pb = _buf(bias, channels, pt, False, "bias")
    cdef void* psm = _buf(save_mean, channels, pt, True, "save_mean")
    cdef void* psi = _buf(save_invstd, channels, pt, True, "save_invstd")
    cdef void* prm = _buf(running_mean, channels, pt, True, "running_mean")
    cdef void* prv = _buf(running_var, channels, pt, True, "running_var")
    cdef uint32_t flags = 0 if unbiased else BNORM_FLAG_BIASED_RUNNING_VAR
    cdef bnorm_status st
    with nogil:
        st = bnorm_forward_normalize(dt, outer, channels, inner, px, py, count,
                                     pm, pq, pw, pb, psm, psi, prm, prv, eps,
                                     momentum, flags)
    _check(st, "batch norm normalize with given statistics")


def backward_reduce(cnp.ndarray dy, cnp.ndarray x, int64_t outer,
                    int64_t channels, int64_t inner, mean, sum_dy, sum_dy_xmu):
    cdef bnorm_dtype dt = _dtype_code(x)
    cdef int t = cnp.PyArray_TYPE(x)
    cdef int pt = _param_type(t)
    cdef int64_t n = outer * channels * inner
    cdef const void* pdy = _buf(dy, n, t, False, "dy")
    cdef const void* px = _buf(x, n, t, False, "x")
    cdef const void* pm = _buf(mean, channels, pt, False, "save_mean")
    cdef double* pa = <double*>_buf(sum_dy, channels, cnp.NPY_FLOAT64, True, "sum_dy")
    cdef double* pb = <double*>_buf(sum_dy_xmu, channels, cnp.NPY_FLOAT64, True, "sum_dy_xmu")
    cdef bnorm_status st
    with nogil:
        st = bnorm_backward_reduce(dt, outer, channels, inner, pdy, px, pm, pa, pb)
    _check(st, "batch norm backward reduction")


def backward_apply(cnp.ndarray dy, cnp.ndarray x, int64_t outer,
                   int64_t channels, int64_t inner, mean, invstd, weight,
                   sum_dy, sum_dy_xmu, int64_t count, dx, dweight, dbias):
    cdef bnorm_dtype dt = _dtype_code(x)
    cdef int t = cnp.PyArray_TYPE(x)
    cdef int pt = _param_type(t)
    cdef int64_t n = outer * channels * inner
    cdef const void* pdy = _buf(dy, n, t, False, "dy")
    cdef const void* px = _buf(x, n, t, False, "x")
    cdef const void* pm = _buf(mean, channels, pt, False, "save_mean")
    cdef const void* pi = _buf(invstd, channels, pt, False, "save_invstd")
    cdef const void* pw = _buf(weight, channels, pt, False, "weight")
    cdef const double* pa = <const double*>_buf(sum_dy, channels, cnp.NPY_FLOAT64, False, "sum_dy")
    cdef const double* pb = <const double*>_buf(sum_dy_xmu, channels, cnp.NPY_FLOAT64, False, "sum_dy_xmu")
    cdef void* pdx = _buf(dx, n, t, True, "out")
    cdef void* pdw = _buf(dweight, channels, pt, True, "dweight")
    cdef void* pdb = _buf(dbias, channels, pt, True, "dbias")
    cdef bnorm_status st
    with nogil:
        st = bnorm_backward_apply(dt, outer, channels, inner, pdy, px, pm, pi,
                                  pw, pa, pb, count, pdx, pdw, pdb)
    _check(st, "batch norm backward with given sums")


# Population statistics (Algorithm 2): an accumulator of
# BNORM_POPULATION_STATE_SIZE(channels) doubles.

def population_state_size(int64_t channels):
    return BNORM_POPULATION_STATE_SIZE(channels)


def population_init(int64_t channels, state):
    cdef double* ps = <double*>_buf(state, BNORM_POPULATION_STATE_SIZE(channels), cnp.NPY_FLOAT64, True, "state")
    _check(bnorm_population_init(channels, ps), "population statistics")


def population_add(int64_t channels, state, int64_t count, mean, m2):
    cdef double* ps = <double*>_buf(state, BNORM_POPULATION_STATE_SIZE(channels), cnp.NPY_FLOAT64, True, "state")
    cdef const double* pm = <const double*>_buf(mean, channels, cnp.NPY_FLOAT64, False, "mean")
    cdef const double* pq = <const double*>_buf(m2, channels, cnp.NPY_FLOAT64, False, "m2")
    _check(bnorm_population_add(channels, ps, count, pm, pq), "population statistics")


def population_merge(int64_t channels, state, other):
    cdef double* ps = <double*>_buf(state, BNORM_POPULATION_STATE_SIZE(channels), cnp.NPY_FLOAT64, True, "state")
    cdef const double* po = <const double*>_buf(other, BNORM_POPULATION_STATE_SIZE(channels), cnp.NPY_FLOAT64,
                                                False, "other")
    _check(bnorm_population_merge(channels, ps, po), "population statistics")


def population_result(int64_t channels, state, mean, var):
    cdef const double* ps = <const double*>_buf(state, BNORM_POPULATION_STATE_SIZE(channels), cnp.NPY_FLOAT64,
                                                False, "state")
    cdef double* pm = <double*>_buf(mean, channels, cnp.NPY_FLOAT64, True, "mean")
    cdef double* pv = <double*>_buf(var, channels, cnp.NPY_FLOAT64, True, "var")
    cdef int64_t batches = 0, values = 0
    _check(bnorm_population_result(channels, ps, &batches, &values, pm, pv),
           "population statistics")
    return batches, values


# ---------------------------------------------------------------------------
# Fast paths for the common call: C-contiguous float32/float64 data, per-
# channel arrays already of the data's dtype, out= absent or a C-contiguous
# array like x (no fused epilogue). They check only the form of the
# arguments, what memory safety needs (types, shapes, contiguity,
# writability); the values (eps, momentum, value counts, pairs, overlaps)
# are checked by the C library. When the form is unusual, or the C library
# refuses the call (having written nothing), they return None and the
# caller takes the general path in bnorm._functional, which holds the one
# set of checks with their messages.
# ---------------------------------------------------------------------------

cdef inline bint _float_data(object x, int* typenum):
    if type(x) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(a)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        return False
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return False
    if cnp.PyArray_NDIM(a) < 2 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        return False
    typenum[0] = t
    return True


cdef inline bint _vec(object p, int typenum, int64_t n, bint writable):
    """None, or a C-contiguous 1-D array of n elements of typenum."""
    if p is None:
        return True
    if type(p) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>p
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_NDIM(a) == 1
            and cnp.PyArray_DIM(a, 0) == n and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and (not writable or cnp.PyArray_ISWRITEABLE(a)))


cdef inline bint _layout(cnp.ndarray x, object axis, int64_t* outer,
                         int64_t* channels, int64_t* inner):
    if type(axis) is not int:
        return False
    cdef int nd = cnp.PyArray_NDIM(x)
    if not (-nd <= axis < nd):  # compared as Python ints: no overflow
        return False
    cdef long a = <long>axis
    if a < 0:
        a += nd
    if a < 0 or a >= nd:
        return False
    cdef int64_t o = 1, i = 1
    cdef int k
    for k in range(a):
        o *= cnp.PyArray_DIM(x, k)
    for k in range(a + 1, nd):
        i *= cnp.PyArray_DIM(x, k)
    outer[0] = o
    channels[0] = cnp.PyArray_DIM(x, a)
    inner[0] = i
    return True


cdef inline bint _same_array(cnp.ndarray a, cnp.ndarray b):
    """b has a's dtype and shape and is C-contiguous (a is C-contiguous and in
    native byte order)."""
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(b) or not cnp.PyArray_ISNOTSWAPPED(b):
        return False
    cdef int nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd:
        return False
    cdef int k
    for k in range(nd):
        if cnp.PyArray_DIM(a, k) != cnp.PyArray_DIM(b, k):
            return False
    return cnp.PyArray_IS_C_CONTIGUOUS(b)


cdef inline bint _apart(cnp.ndarray a, cnp.ndarray b):
    """The C-contiguous arrays a and b are the same memory or share none."""
    cdef char* p = <char*>cnp.PyArray_DATA(a)
    cdef char* q = <char*>cnp.PyArray_DATA(b)
    if p == q:
        return True
    return p + cnp.PyArray_NBYTES(a) <= q or q + cnp.PyArray_NBYTES(b) <= p


cdef inline cnp.ndarray _per_channel(int64_t channels, int typenum):
    """A new 1-D array of one value per channel."""
    cdef cnp.npy_intp c = channels
    return cnp.PyArray_EMPTY(1, &c, typenum, 0)


cdef inline object _fast_out(object out, cnp.ndarray x, object other):
    """A new array like x for out=None; out itself when it is a writable
    C-contiguous array like x that is x's memory (or other's) or apart from
    both; else None (the general path then raises the precise error)."""
    if out is None:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x),
                                 cnp.PyArray_TYPE(x), 0)
    if type(out) is not cnp.ndarray:
        return None
    cdef cnp.ndarray o = <cnp.ndarray>out
    if not (_same_array(x, o) and cnp.PyArray_ISWRITEABLE(o) and _apart(x, o)):
        return None
    if other is not None and not _apart(<cnp.ndarray>other, o):
        return None
    return o


def fast_inference(x, mean, var, weight, bias, eps, axis, out=None):
    cdef int t
    cdef int64_t outer, channels, inner
    if not _float_data(x, &t) or type(eps) is not float:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    if not _layout(xa, axis, &outer, &channels, &inner):
        return None
    if mean is None or var is None:
        return None
    if not (_vec(mean, t, channels, False) and _vec(var, t, channels, False)
            and _vec(weight, t, channels, False) and _vec(bias, t, channels, False)):
        return None
    y = _fast_out(out, xa, None)
    if y is None:
        return None
    try:
        forward_inference(xa, y, outer, channels, inner, mean, var, weight, bias, eps)
    except BnormError:
        return None
    return y


def fast_training(x, weight, bias, eps, axis, running_mean, running_var,
                  momentum, unbiased, out=None):
    cdef int t
    cdef int64_t outer, channels, inner
    if not _float_data(x, &t) or type(eps) is not float or type(unbiased) is not bool:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    if not _layout(xa, axis, &outer, &channels, &inner):
        return None
    if not (_vec(weight, t, channels, False) and _vec(bias, t, channels, False)
            and _vec(running_mean, t, channels, True)
            and _vec(running_var, t, channels, True)):
        return None
    cdef double mom = 0.0
    if running_mean is not None or running_var is not None:
        if type(momentum) is not float:
            return None
        mom = <double>momentum
    y = _fast_out(out, xa, None)
    if y is None:
        return None
    sm = _per_channel(channels, t)
    si = _per_channel(channels, t)
    try:
        forward_training(xa, y, outer, channels, inner, weight, bias, sm, si,
                         running_mean, running_var, eps, mom, unbiased)
    except BnormError:
        return None
    return y, sm, si


def fast_backward(dy, x, save_mean, save_invstd, weight, axis, training, out=None):
    """batch_norm_backward without the fused ReLU or residual."""
    cdef int t
    cdef int64_t outer, channels, inner
    if not _float_data(x, &t) or type(dy) is not cnp.ndarray or type(training) is not bool:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef cnp.ndarray ga = <cnp.ndarray>dy
    if not _same_array(xa, ga):  # dy like x
        return None
    if not _layout(xa, axis, &outer, &channels, &inner):
        return None
    if save_mean is None or save_invstd is None:
        return None
    if not (_vec(save_mean, t, channels, False) and _vec(save_invstd, t, channels, False)
            and _vec(weight, t, channels, False)):
        return None
    dx = _fast_out(out, xa, ga)
    if dx is None:
        return None
    dw = _per_channel(channels, t)
    db = _per_channel(channels, t)
    try:
        backward(ga, xa, outer, channels, inner, save_mean, save_invstd, weight, dx,
                 dw, db, not training)
    except BnormError:
        return None
    return dx, dw, db
