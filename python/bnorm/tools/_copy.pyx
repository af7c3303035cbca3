# cython: language_level=3, boundscheck=False, wraparound=False
"""The benchmark floor's parallel copy, compiled: the tensor cut into one
contiguous piece of whole cache lines per thread, each piece copied by its
own OpenMP thread with the C library's memcpy. A few lines beside bnorm,
not a bnorm kernel; it shares the process's OpenMP runtime with libbnorm."""

from cython.parallel cimport prange
from libc.stdint cimport uintptr_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int bnorm_copy_openmp(void) { return 1; }
    static int bnorm_copy_team(void) { return omp_get_num_threads(); }
    #else
    static int bnorm_copy_openmp(void) { return 0; }
    static int bnorm_copy_team(void) { return 1; }
    #endif
    """
    int bnorm_copy_openmp() nogil
    int bnorm_copy_team() nogil

openmp = bool(bnorm_copy_openmp())


def parallel_copy(dst, src, int threads):
    """dst[...] = src (two C-contiguous arrays of one size in bytes) with
    `threads` OpenMP threads; returns how many threads the team had."""
    if dst.nbytes != src.nbytes or not (dst.flags.c_contiguous and src.flags.c_contiguous):
        raise ValueError("parallel_copy needs two C-contiguous arrays of one size")
    if not dst.flags.writeable:
        raise ValueError("parallel_copy: the destination is read-only")
    if threads < 1:
        raise ValueError("parallel_copy: threads must be at least 1")
    cdef char* d = <char*><uintptr_t>dst.ctypes.data
    cdef const char* s = <const char*><uintptr_t>src.ctypes.data
    cdef Py_ssize_t total = src.nbytes
    cdef Py_ssize_t step = ((total + threads - 1) // threads + 63) // 64 * 64
    cdef Py_ssize_t k, lo, hi
    cdef int team[1]
    team[0] = 1
    if step < 64:
        step = 64
    with nogil:
        for k in prange(threads, num_threads=threads, schedule="static", chunksize=1):
            lo = k * step
            if lo > total:
                lo = total
            hi = lo + step
            if hi > total or k == threads - 1:
                hi = total
            if hi > lo:
                memcpy(d + lo, s + lo, hi - lo)
            if k == 0:
                team[0] = bnorm_copy_team()  # (an element: not made private)
    return team[0]
