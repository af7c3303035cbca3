# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin bindings to the C API of libbnorm.

The public functions in ``bnorm._functional`` check and shape the arguments
and own the error messages. Each binding here takes the arrays of its call
as one tuple in the order of its spec in ``bnorm._spec`` and checks, by that
spec, only what memory safety depends on (array type, dtype, size,
contiguity, writability: ``_take``); the fast paths check the same rules
without raising. The GIL is released around the C call, and status codes
become exceptions in one place, ``_check``.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t, uint32_t

from bnorm._bnorm cimport *
from bnorm import _spec

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    int NPY_USERDEF  # the first type number of a registered dtype (ml_dtypes')
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order,
                                cnp.PyArray_Descr* descr, int subok)


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


cdef int _bfloat16_type = -1  # ml_dtypes' bfloat16 type number, once seen


cdef bint _learn_bfloat16(cnp.ndarray a):
    global _bfloat16_type
    if a.dtype.name == "bfloat16" and a.dtype.itemsize == 2:
        _bfloat16_type = cnp.PyArray_TYPE(a)
        return True
    return False


cdef inline int _data_dtype(cnp.ndarray a):
    """bnorm's code for a's dtype, or -1 for one bnorm does not take."""
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT32:
        return BNORM_FLOAT32
    if t == cnp.NPY_FLOAT64:
        return BNORM_FLOAT64
    if t == cnp.NPY_FLOAT16:
        return BNORM_FLOAT16
    if t == _bfloat16_type or (t >= NPY_USERDEF and _learn_bfloat16(a)):  # ml_dtypes'
        return BNORM_BFLOAT16
    return -1


cdef bnorm_dtype _dtype_code(cnp.ndarray a) except -1:
    cdef int code = _data_dtype(a)
    if code < 0:
        raise TypeError(f"unsupported dtype {a.dtype}; expected float32, float64, "
                        "float16 or bfloat16")
    return <bnorm_dtype>code


cdef inline int _param_type(int t):
    """Parameters and statistics: float64 for float64 data, else float32."""
    return cnp.NPY_FLOAT64 if t == cnp.NPY_FLOAT64 else cnp.NPY_FLOAT32


# ---------------------------------------------------------------------------
# The form of an array argument: what memory safety depends on. One check,
# used by the bindings (which raise) and by the fast paths (which fall back).
# ---------------------------------------------------------------------------

cdef enum Misfit:
    FITS = 0
    NOT_ARRAY
    WRONG_DTYPE
    SWAPPED
    NOT_CONTIGUOUS
    WRONG_SIZE
    READ_ONLY
    NOT_1D


cdef inline Misfit _misfit(object obj, int64_t n, int typenum, bint writable,
                           bint exact, bint vector):
    """FITS when obj is a C-contiguous array of n elements of typenum in
    native byte order (and writable when asked). ``exact`` is the fast path's
    stricter form: an ndarray itself (no subclass) and, for a per-channel
    ``vector``, 1-D."""
    if exact:
        if type(obj) is not cnp.ndarray:
            return NOT_ARRAY
    elif not cnp.PyArray_Check(obj):
        return NOT_ARRAY
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(a) != typenum:
        return WRONG_DTYPE
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return SWAPPED
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        return NOT_CONTIGUOUS
    if exact and vector and cnp.PyArray_NDIM(a) != 1:
        return NOT_1D
    if cnp.PyArray_SIZE(a) != n:
        return WRONG_SIZE
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        return READ_ONLY
    return FITS


cdef object _misfit_error(Misfit m, object obj, int64_t n, int typenum, str name):
    if m == NOT_ARRAY:
        return TypeError(f"{name} must be a numpy.ndarray, got {type(obj).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if m == WRONG_DTYPE:
        return TypeError(f"{name} has dtype {a.dtype}, expected "
                         f"{cnp.PyArray_DescrFromType(typenum)}")
    if m == SWAPPED:
        return TypeError(f"{name} has dtype {a.dtype.str}: not in native byte order")
    if m == NOT_CONTIGUOUS:
        return ValueError(f"{name} must be C-contiguous")
    if m == WRONG_SIZE:
        return ValueError(f"{name} has {cnp.PyArray_SIZE(a)} elements, expected {n}")
    return ValueError(f"{name} is read-only")


cdef void* _buf(object obj, int64_t n, int typenum, bint writable,
                str name) except? NULL:
    """Data pointer of a C-contiguous array of n elements of typenum, or NULL
    for None; anything else raises."""
    if obj is None:
        return NULL
    cdef Misfit m = _misfit(obj, n, typenum, writable, False, False)
    if m != FITS:
        raise _misfit_error(m, obj, n, typenum, name)
    return cnp.PyArray_DATA(<cnp.ndarray>obj)


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


# ---------------------------------------------------------------------------
# The argument specs of bnorm._spec, compiled into rules. A binding takes the
# arrays of its call as one tuple in the spec's order (which is the order of
# the C function's parameters) and _take turns them into pointers.
# ---------------------------------------------------------------------------

cdef enum:
    MAX_ARGS = 12

cdef enum Kind:
    DATA = 0
    CHANNEL = 1
    SUMS = 2


cdef class _Rules:
    cdef readonly str op
    cdef readonly tuple names
    cdef int count
    cdef int lead                   # the array whose dtype is the call's
    cdef Kind kind[MAX_ARGS]
    cdef bint writable[MAX_ARGS]
    cdef bint optional[MAX_ARGS]

    def __init__(self, spec):
        if len(spec.args) > MAX_ARGS:
            raise ValueError(f"{spec.op}: more than {MAX_ARGS} arrays")
        self.op = spec.op
        self.names = tuple(a.name for a in spec.args)
        self.count = len(spec.args)
        self.lead = -1
        cdef int i
        for i, a in enumerate(spec.args):
            self.kind[i] = {"data": DATA, "channel": CHANNEL, "sums": SUMS}[a.kind]
            self.writable[i] = a.access != "in"
            self.optional[i] = a.optional
            if self.lead < 0 and a.kind == "data":
                self.lead = i
        if self.lead < 0:
            self.lead = 0


cdef int _take(_Rules r, tuple arrays, int64_t n, int64_t channels, int t, int pt,
               void** p, bint exact, uint32_t later=0) except -2:
    """Fill p with the arrays' data pointers (NULL for an optional None).
    Data arrays have n elements of typenum t, per-channel ones channels
    elements of pt ("channel") or float64 ("sums"). A misfit raises, or with
    ``exact`` (the fast paths) returns -1. Bit i of ``later``: the caller
    makes array i after the check (None here; its pointer is the caller's
    to set), so a declined call allocates nothing."""
    if len(arrays) != r.count:
        raise TypeError(f"{r.op}: {r.count} arrays expected, got {len(arrays)}")
    cdef int i, typenum
    cdef int64_t size
    cdef Misfit m
    for i in range(r.count):
        obj = arrays[i]
        if obj is None:
            if r.optional[i] or (later >> i) & 1:
                p[i] = NULL
                continue
            if exact:
                return -1
            raise ValueError(f"{r.op}: {r.names[i]} is required")
        if r.kind[i] == DATA:
            size, typenum = n, t
        else:
            size, typenum = channels, (pt if r.kind[i] == CHANNEL else cnp.NPY_FLOAT64)
        m = _misfit(obj, size, typenum, r.writable[i], exact, r.kind[i] != DATA)
        if m != FITS:
            if exact:
                return -1
            raise _misfit_error(m, obj, size, typenum, r.names[i])
        p[i] = cnp.PyArray_DATA(<cnp.ndarray>obj)
    return 0


cdef bnorm_dtype _pointers(_Rules r, tuple arrays, int64_t n, int64_t channels,
                           void** p, bint params_like_data=False) except? -1:
    """A binding's arrays as pointers in p (raising on a misfit); returns the
    dtype code of the call, that of its lead array. Per-channel arrays have
    the parameter dtype of it, or its own dtype with params_like_data."""
    if len(arrays) != r.count:
        raise TypeError(f"{r.op}: {r.count} arrays expected, got {len(arrays)}")
    a = arrays[r.lead]
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{r.names[r.lead]} must be a numpy.ndarray, got {type(a).__name__}")
    cdef bnorm_dtype dt = _dtype_code(<cnp.ndarray>a)
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>a)
    _take(r, arrays, n, channels, t, t if params_like_data else _param_type(t), p, False)
    return dt


cdef _Rules _TRAINING = _Rules(_spec.TRAINING)
cdef _Rules _INFERENCE = _Rules(_spec.INFERENCE)
cdef _Rules _BACKWARD = _Rules(_spec.BACKWARD)
cdef _Rules _MOMENTS = _Rules(_spec.MOMENTS)
cdef _Rules _NORMALIZE = _Rules(_spec.NORMALIZE)
cdef _Rules _BACKWARD_REDUCE = _Rules(_spec.BACKWARD_REDUCE)
cdef _Rules _BACKWARD_APPLY = _Rules(_spec.BACKWARD_APPLY)
cdef _Rules _FROM_OUTPUT = _Rules(_spec.FROM_OUTPUT)
cdef _Rules _SCALE_SHIFT = _Rules(_spec.SCALE_SHIFT)
cdef _Rules _FOLD = _Rules(_spec.FOLD)


# The C calls, each with its arrays p in its spec's order.

cdef inline bnorm_status _training(bnorm_dtype dt, int64_t o, int64_t c, int64_t i,
                                   void** p, double eps, double momentum,
                                   uint32_t flags) noexcept nogil:
    return bnorm_forward_training_fused(dt, o, c, i, p[0], p[1], p[2], p[3], p[4],
                                        p[5], p[6], p[7], p[8], eps, momentum, flags)


cdef inline bnorm_status _inference(bnorm_dtype dt, int64_t o, int64_t c, int64_t i,
                                    void** p, double eps, uint32_t flags) noexcept nogil:
    return bnorm_forward_inference_fused(dt, o, c, i, p[0], p[1], p[2], p[3], p[4],
                                         p[5], p[6], eps, flags)


cdef inline bnorm_status _backward(bnorm_dtype dt, int64_t o, int64_t c, int64_t i,
                                   void** p, uint32_t flags) noexcept nogil:
    return bnorm_backward_fused(dt, o, c, i, p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                                p[7], p[8], p[9], p[10], flags)


# The fused activations' flags (0: none), as the functions below take them.
FUSED_ACTIVATIONS = {"relu": BNORM_FLAG_RELU, "relu6": BNORM_FLAG_RELU6}


cdef inline uint32_t _flags(uint32_t act, uint32_t other) noexcept:
    """other with act's activation flag (other bits of act dropped)."""
    return other | (act & (BNORM_FLAG_RELU | BNORM_FLAG_RELU6))


def forward_training(tuple arrays, int64_t outer, int64_t channels, int64_t inner,
                     double eps, double momentum, bint unbiased=True, uint32_t act=0):
    """Arrays in the order of ``bnorm._spec.TRAINING``."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_TRAINING, arrays, outer * channels * inner, channels, p)
    cdef uint32_t flags = _flags(act, 0 if unbiased else BNORM_FLAG_BIASED_RUNNING_VAR)
    cdef bnorm_status st
    with nogil:
        st = _training(dt, outer, channels, inner, p, eps, momentum, flags)
    _check(st, _TRAINING.op)


def forward_inference(tuple arrays, int64_t outer, int64_t channels, int64_t inner,
                      double eps, uint32_t act=0):
    """Arrays in the order of ``bnorm._spec.INFERENCE``."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_INFERENCE, arrays, outer * channels * inner, channels, p)
    cdef uint32_t flags = _flags(act, 0)
    cdef bnorm_status st
    with nogil:
        st = _inference(dt, outer, channels, inner, p, eps, flags)
    _check(st, _INFERENCE.op)


def backward(tuple arrays, int64_t outer, int64_t channels, int64_t inner,
             bint frozen, uint32_t act=0):
    """Arrays in the order of ``bnorm._spec.BACKWARD``."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_BACKWARD, arrays, outer * channels * inner, channels, p)
    cdef uint32_t flags = _flags(act, BNORM_FLAG_FROZEN_STATS if frozen else 0)
    cdef bnorm_status st
    with nogil:
        st = _backward(dt, outer, channels, inner, p, flags)
    _check(st, _BACKWARD.op)


ACTIVATIONS = {"identity": BNORM_ACT_IDENTITY, "leaky_relu": BNORM_ACT_LEAKY_RELU,
               "elu": BNORM_ACT_ELU}


def backward_from_output(tuple arrays, int64_t outer, int64_t channels, int64_t inner,
                         bint frozen, int32_t activation, double param):
    """Arrays in the order of ``bnorm._spec.FROM_OUTPUT``; activation one of
    ACTIVATIONS' codes."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_FROM_OUTPUT, arrays, outer * channels * inner, channels,
                                    p)
    cdef uint32_t flags = BNORM_FLAG_FROZEN_STATS if frozen else 0
    cdef bnorm_status st
    with nogil:
        st = bnorm_backward_from_output(dt, outer, channels, inner, p[0], p[1], p[2], p[3],
                                        p[4], p[5], p[6], p[7], p[8], p[9], activation, param,
                                        flags)
    _check(st, _FROM_OUTPUT.op)


def inference_scale_shift(tuple arrays, double eps):
    """Arrays in the order of ``bnorm._spec.SCALE_SHIFT``."""
    cdef void* p[MAX_ARGS]
    cdef int64_t c = 0  # channels: running_mean's size
    if len(arrays) and cnp.PyArray_Check(arrays[0]):
        c = cnp.PyArray_SIZE(<cnp.ndarray>arrays[0])
    cdef bnorm_dtype dt = _pointers(_SCALE_SHIFT, arrays, c, c, p, True)
    cdef bnorm_status st
    with nogil:
        st = bnorm_inference_scale_shift(dt, c, p[0], p[1], p[2], p[3], eps, p[4], p[5])
    _check(st, _SCALE_SHIFT.op)


def fold_into_layer(tuple arrays, int64_t outer, int64_t channels, int64_t inner,
                    double eps):
    """Arrays in the order of ``bnorm._spec.FOLD`` (all in the layer's dtype)."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_FOLD, arrays, outer * channels * inner, channels, p, True)
    cdef bnorm_status st
    with nogil:
        st = bnorm_fold_into_layer(dt, outer, channels, inner, p[0], p[1], p[2], p[3],
                                   p[4], p[5], eps, p[6], p[7])
    _check(st, _FOLD.op)


# Split phases for statistics spanning several processes (bnorm.distributed).
# Statistics and sums are float64 arrays whatever the data dtype.

def moments(tuple arrays, int64_t outer, int64_t channels, int64_t inner):
    """Arrays in the order of ``bnorm._spec.MOMENTS``."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_MOMENTS, arrays, outer * channels * inner, channels, p)
    cdef bnorm_status st
    with nogil:
        st = bnorm_moments(dt, outer, channels, inner, p[0], <double*>p[1], <double*>p[2])
    _check(st, _MOMENTS.op)


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


def forward_normalize(tuple arrays, int64_t outer, int64_t channels, int64_t inner,
                      int64_t count, double eps, double momentum, bint unbiased=True):
    """Arrays in the order of ``bnorm._spec.NORMALIZE``."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_NORMALIZE, arrays, outer * channels * inner, channels, p)
    cdef uint32_t flags = 0 if unbiased else BNORM_FLAG_BIASED_RUNNING_VAR
    cdef bnorm_status st
    with nogil:
        st = bnorm_forward_normalize(dt, outer, channels, inner, p[0], p[1], count,
                                     <const double*>p[2], <const double*>p[3], p[4], p[5],
                                     p[6], p[7], p[8], p[9], eps, momentum, flags)
    _check(st, _NORMALIZE.op)


def backward_reduce(tuple arrays, int64_t outer, int64_t channels, int64_t inner):
    """Arrays in the order of ``bnorm._spec.BACKWARD_REDUCE``."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_BACKWARD_REDUCE, arrays, outer * channels * inner, channels, p)
    cdef bnorm_status st
    with nogil:
        st = bnorm_backward_reduce(dt, outer, channels, inner, p[0], p[1], p[2],
                                   <double*>p[3], <double*>p[4])
    _check(st, _BACKWARD_REDUCE.op)


def backward_apply(tuple arrays, int64_t outer, int64_t channels, int64_t inner,
                   int64_t count):
    """Arrays in the order of ``bnorm._spec.BACKWARD_APPLY``."""
    cdef void* p[MAX_ARGS]
    cdef bnorm_dtype dt = _pointers(_BACKWARD_APPLY, arrays, outer * channels * inner, channels, p)
    cdef bnorm_status st
    with nogil:
        st = bnorm_backward_apply(dt, outer, channels, inner, p[0], p[1], p[2], p[3], p[4],
                                  <const double*>p[5], <const double*>p[6], count, p[7],
                                  p[8], p[9])
    _check(st, _BACKWARD_APPLY.op)



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
# Fast paths for the common call: C-contiguous data of any of the four
# dtypes, per-channel arrays already of the parameter dtype (float64 for
# float64 data, else float32), out= absent or a C-contiguous
# array like x (no fused epilogue). They check the form of the arrays with
# the rules of the same spec as the bindings (_take, exactly), and nothing
# else: the values (eps, momentum, value counts, pairs, overlaps) are the C
# library's to refuse. When the form is unusual, or the C library refuses
# the call (having written nothing), they return None and the caller takes
# the general path in bnorm._functional, which holds the one set of checks
# with their messages.
# ---------------------------------------------------------------------------

cdef inline bint _fast_data(object x, int* typenum, bnorm_dtype* dt):
    """x is a C-contiguous ndarray of >= 2 dimensions of a data dtype."""
    if type(x) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int code = _data_dtype(a)
    if code < 0:
        return False
    dt[0] = <bnorm_dtype>code
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return False
    if cnp.PyArray_NDIM(a) < 2 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        return False
    typenum[0] = cnp.PyArray_TYPE(a)
    return True


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


cdef inline bint _same_shape(cnp.ndarray a, object other):
    """other is an ndarray of a's shape (its dtype and form are _take's)."""
    if type(other) is not cnp.ndarray:
        return False
    cdef cnp.ndarray b = <cnp.ndarray>other
    cdef int nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd:
        return False
    cdef int k
    for k in range(nd):
        if cnp.PyArray_DIM(a, k) != cnp.PyArray_DIM(b, k):
            return False
    return True


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


cdef inline bint _out_fits(object out, cnp.ndarray x, object other):
    """out= has x's shape and is x's memory (or other's) or apart from both
    (its dtype and form are _take's); else the general path raises the
    precise error."""
    if not _same_shape(x, out):
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    if not cnp.PyArray_IS_C_CONTIGUOUS(o) or not _apart(x, o):
        return False
    return other is None or _apart(<cnp.ndarray>other, o)


cdef inline object _like(cnp.ndarray x):
    """A new array of x's shape and dtype."""
    return PyArray_NewLikeArray(x, cnp.NPY_CORDER, NULL, 0)


cdef tuple _outputs(cnp.ndarray x, object out, int64_t channels, int pt, void** p,
                    int i_out, int i_a, int i_b):
    """After _take: the output like x (out itself when given) and two new
    per-channel arrays of pt, their pointers set at p[i_out], p[i_a], p[i_b]."""
    y = _like(x) if out is None else out
    a = _per_channel(channels, pt)
    b = _per_channel(channels, pt)
    p[i_out] = cnp.PyArray_DATA(<cnp.ndarray>y)
    p[i_a] = cnp.PyArray_DATA(a)
    p[i_b] = cnp.PyArray_DATA(b)
    return y, a, b


def fast_inference(x, mean, var, weight, bias, eps, axis, out=None, residual=None,
                   uint32_t act=0):
    cdef int t
    cdef bnorm_dtype dt
    cdef int64_t outer, channels, inner
    cdef void* p[MAX_ARGS]
    if not _fast_data(x, &t, &dt) or type(eps) is not float:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    if residual is not None and not _same_shape(xa, residual):
        return None
    if not _layout(xa, axis, &outer, &channels, &inner):
        return None
    if out is not None and not _out_fits(out, xa, residual):
        return None
    if _take(_INFERENCE, (x, residual, out, mean, var, weight, bias),
             outer * channels * inner, channels, t, _param_type(t), p, True, 1 << 2) < 0:
        return None
    y = _like(xa) if out is None else out
    p[2] = cnp.PyArray_DATA(<cnp.ndarray>y)
    cdef double e = eps
    cdef uint32_t flags = _flags(act, 0)
    cdef bnorm_status st
    with nogil:
        st = _inference(dt, outer, channels, inner, p, e, flags)
    return y if st == BNORM_OK else None


def fast_training(x, weight, bias, eps, axis, running_mean, running_var,
                  momentum, unbiased, out=None, residual=None, uint32_t act=0):
    cdef int t
    cdef bnorm_dtype dt
    cdef int64_t outer, channels, inner
    cdef void* p[MAX_ARGS]
    if (not _fast_data(x, &t, &dt) or type(eps) is not float
            or type(unbiased) is not bool):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    if residual is not None and not _same_shape(xa, residual):
        return None
    if not _layout(xa, axis, &outer, &channels, &inner):
        return None
    cdef double mom = 0.0
    if running_mean is not None or running_var is not None:
        if type(momentum) is not float:
            return None
        mom = <double>momentum
    if out is not None and not _out_fits(out, xa, residual):
        return None
    if _take(_TRAINING, (x, residual, out, weight, bias, None, None, running_mean,
                         running_var),
             outer * channels * inner, channels, t, _param_type(t), p, True,
             (1 << 2) | (1 << 5) | (1 << 6)) < 0:
        return None
    y, sm, si = _outputs(xa, out, channels, _param_type(t), p, 2, 5, 6)
    cdef double e = eps
    cdef uint32_t flags = _flags(act, 0 if unbiased else BNORM_FLAG_BIASED_RUNNING_VAR)
    cdef bnorm_status st
    with nogil:
        st = _training(dt, outer, channels, inner, p, e, mom, flags)
    return (y, sm, si) if st == BNORM_OK else None


def fast_backward(dy, x, save_mean, save_invstd, weight, axis, training, out=None,
                  y=None, bias=None, uint32_t act=0, bint residual=False, dresidual=None):
    """batch_norm_backward; with act (FUSED_ACTIVATIONS) its mask from y or
    recomputed from x with bias, with residual also dresidual (into
    ``dresidual`` when given): (dx, dweight, dbias[, dresidual]). None
    where the general path is to decide (or to raise): y without act, a
    mask with nowhere to come from, shapes or layouts that differ. (The
    library refuses overlaps before it writes: then None too.)"""
    cdef int t
    cdef bnorm_dtype dt
    cdef int64_t outer, channels, inner
    cdef void* p[MAX_ARGS]
    if not _fast_data(x, &t, &dt) or type(training) is not bool:
        return None
    if (y is not None and act == 0) or (act != 0 and y is None and residual):
        return None
    if dresidual is not None and not residual:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    if not _same_shape(xa, dy):  # dy like x
        return None
    if y is not None and not _same_shape(xa, y):
        return None
    if dresidual is not None and not _same_shape(xa, dresidual):
        return None
    if not _layout(xa, axis, &outer, &channels, &inner):
        return None
    if out is not None and not _out_fits(out, xa, dy):
        return None
    cdef uint32_t later = (1 << 7) | (1 << 8) | (1 << 9) | (
        (1 << 10) if residual and dresidual is None else 0)
    if _take(_BACKWARD, (dy, x, y, save_mean, save_invstd, weight, bias, out, None, None,
                         dresidual), outer * channels * inner, channels, t, _param_type(t), p,
             True, later) < 0:
        return None
    dx, dw, db = _outputs(xa, out, channels, _param_type(t), p, 7, 8, 9)
    dres = None
    if residual:
        dres = _like(xa) if dresidual is None else dresidual
        p[10] = cnp.PyArray_DATA(<cnp.ndarray>dres)
    cdef uint32_t flags = _flags(act, 0 if training else BNORM_FLAG_FROZEN_STATS)
    cdef bnorm_status st
    with nogil:
        st = _backward(dt, outer, channels, inner, p, flags)
    if st != BNORM_OK:
        return None
    return (dx, dw, db, dres) if residual else (dx, dw, db)
