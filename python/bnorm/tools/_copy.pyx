# cython: language_level=3, boundscheck=False, wraparound=False
"""The benchmark floor's parallel copy, compiled: the tensor cut into one
contiguous piece of whole cache lines per thread, each piece copied by its
own OpenMP thread with the C library's memcpy. A few lines beside bnorm,
not a bnorm kernel; it shares the process's OpenMP runtime with libbnorm."""

from cython.parallel cimport prange
from libc.stdint cimport uint64_t, uintptr_t
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
    #include <stdint.h>
    #include <stddef.h>
    /* the OR of n words, eight independent chains; the compiler vectorizes
       it (with AVX2 where the CPU has it: 32-byte loads, as memcpy uses) */
    #define BNORM_READ_BODY                                                  \
      uint64_t a[8] = {0, 0, 0, 0, 0, 0, 0, 0};                              \
      size_t i = 0;                                                          \
      for (; i + 8 <= n; i += 8)                                             \
        for (int k = 0; k < 8; ++k) a[k] |= w[i + k];                        \
      for (; i < n; ++i) a[0] |= w[i];                                       \
      return a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7];
    static uint64_t bnorm_read_plain(const uint64_t* w, size_t n) { BNORM_READ_BODY }
    #if defined(__GNUC__) && defined(__x86_64__)
    __attribute__((target("avx2")))
    static uint64_t bnorm_read_avx2(const uint64_t* w, size_t n) { BNORM_READ_BODY }
    static uint64_t bnorm_read_words(const uint64_t* w, size_t n) {
      return __builtin_cpu_supports("avx2") ? bnorm_read_avx2(w, n) : bnorm_read_plain(w, n);
    }
    #else
    static uint64_t bnorm_read_words(const uint64_t* w, size_t n) { return bnorm_read_plain(w, n); }
    #endif
    """
    int bnorm_copy_openmp() nogil
    int bnorm_copy_team() nogil
    uint64_t bnorm_read_words(const uint64_t* w, size_t n) nogil

openmp = bool(bnorm_copy_openmp())


cdef inline Py_ssize_t _piece_lo(Py_ssize_t k, Py_ssize_t step, Py_ssize_t total) noexcept nogil:
    """Where piece k of pieces of `step` units of a range of `total` units
    starts (the last one takes the rest: _piece_hi)."""
    return total if k * step > total else k * step


cdef inline Py_ssize_t _piece_hi(Py_ssize_t k, int threads, Py_ssize_t step,
                                 Py_ssize_t total) noexcept nogil:
    """Where piece k of `threads` such pieces ends."""
    cdef Py_ssize_t hi = _piece_lo(k, step, total) + step
    return total if hi > total or k == threads - 1 else hi


# (the bounds are assigned, not written through pointers, in the prange
# bodies: only a variable assigned in the body is private to each thread;
# lo and hi passed by address were shared, and with more threads than cores
# one thread's piece could take another's bounds: a piece not copied or read,
# seen under qemu with 8 threads)
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
            lo = _piece_lo(k, step, total)
            hi = _piece_hi(k, threads, step, total)
            if hi > lo:
                memcpy(d + lo, s + lo, hi - lo)
            if k == 0:
                team[0] = bnorm_copy_team()  # (an element: not made private)
    return team[0]


def parallel_read(src, int threads):
    """Reads every 8-byte word of src (C-contiguous; a trailing part of
    fewer than 8 bytes is not read) with `threads` OpenMP threads, one
    contiguous piece each, and returns the OR of the words (so that the
    reads cannot be left out). The time of one pass that only reads: what a
    second read of a tensor costs beside a copy of it."""
    if not src.flags.c_contiguous:
        raise ValueError("parallel_read needs a C-contiguous array")
    if threads < 1:
        raise ValueError("parallel_read: threads must be at least 1")
    cdef const uint64_t* w = <const uint64_t*><uintptr_t>src.ctypes.data
    cdef Py_ssize_t n = src.nbytes // 8
    cdef Py_ssize_t step = ((n + threads - 1) // threads + 7) // 8 * 8
    cdef Py_ssize_t k, lo, hi
    cdef uint64_t acc = 0
    with nogil:
        for k in prange(threads, num_threads=threads, schedule="static", chunksize=1):
            lo = _piece_lo(k, step, n)
            hi = _piece_hi(k, threads, step, n)
            acc |= bnorm_read_words(w + lo, hi - lo)
    return acc
