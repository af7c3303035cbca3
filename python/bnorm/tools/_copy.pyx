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
    /* The arithmetic of float32 training statistics alone: per value
       d = (double)x - k, s1 += d, s2 += d * d, in 16 lanes of double (two
       AVX-512 registers per sum, as the kernels); n a multiple of 16. Run
       on data in L1 it is the most a reduction in double can do per value
       on one core: the arithmetic limit the benchmark reports. */
    static double bnorm_stats_plain(const float* p, size_t n, double k) {
      double a[16] = {0}, b[16] = {0};
      for (size_t i = 0; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; ++j) {
          const double d = (double)p[i + j] - k;
          a[j] += d;
          b[j] += d * d;
        }
      double t = 0;
      for (int j = 0; j < 16; ++j) t += a[j] + b[j];
      return t;
    }
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    __attribute__((target("avx512f")))
    static double bnorm_stats_avx512(const float* p, size_t n, double k) {
      const __m512d kk = _mm512_set1_pd(k);
      __m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
      for (size_t i = 0; i + 16 <= n; i += 16) {
        const __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(p + i)), kk);
        const __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(p + i + 8)), kk);
        a0 = _mm512_add_pd(a0, d0);
        a1 = _mm512_add_pd(a1, d1);
        b0 = _mm512_add_pd(b0, _mm512_mul_pd(d0, d0));
        b1 = _mm512_add_pd(b1, _mm512_mul_pd(d1, d1));
      }
      return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(b0, b1)));
    }
    __attribute__((target("avx2")))
    static double bnorm_stats_avx2(const float* p, size_t n, double k) {
      const __m256d kk = _mm256_set1_pd(k);
      __m256d a[4], b[4];
      for (int j = 0; j < 4; ++j) a[j] = b[j] = _mm256_setzero_pd();
      for (size_t i = 0; i + 16 <= n; i += 16)
        for (int j = 0; j < 4; ++j) {
          const __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(p + i + 4 * j)), kk);
          a[j] = _mm256_add_pd(a[j], d);
          b[j] = _mm256_add_pd(b[j], _mm256_mul_pd(d, d));
        }
      double t[4];
      const __m256d sa = _mm256_add_pd(_mm256_add_pd(a[0], a[1]), _mm256_add_pd(a[2], a[3]));
      const __m256d sb = _mm256_add_pd(_mm256_add_pd(b[0], b[1]), _mm256_add_pd(b[2], b[3]));
      _mm256_storeu_pd(t, _mm256_add_pd(sa, sb));
      return t[0] + t[1] + t[2] + t[3];
    }
    static int bnorm_stats_form(void) {
      return __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    static double bnorm_stats(const float* p, size_t n, double k) {
      switch (bnorm_stats_form()) {
        case 2: return bnorm_stats_avx512(p, n, k);
        case 1: return bnorm_stats_avx2(p, n, k);
        default: return bnorm_stats_plain(p, n, k);
      }
    }
    #else
    static int bnorm_stats_form(void) { return 0; }
    static double bnorm_stats(const float* p, size_t n, double k) { return bnorm_stats_plain(p, n, k); }
    #endif
    """
    int bnorm_copy_openmp() nogil
    int bnorm_copy_team() nogil
    uint64_t bnorm_read_words(const uint64_t* w, size_t n) nogil
    int bnorm_stats_form() nogil
    double bnorm_stats(const float* p, size_t n, double k) nogil

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


def stats_arithmetic_ns(int reps=20000):
    """Nanoseconds per value of the float32 statistics' arithmetic alone
    (bnorm_stats above) on 4,096 values that stay in L1, one thread, the
    best of 5 rounds of `reps` passes; and the instruction set it used
    ("avx512", "avx2" or "plain")."""
    import time
    import numpy as np
    x = (1.0 + 0.001 * (np.arange(4096) % 997)).astype(np.float32)
    cdef const float* p = <const float*><uintptr_t>x.ctypes.data
    cdef size_t n = 4096
    cdef int r
    cdef double sink = 0
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        with nogil:
            for r in range(reps):
                sink += bnorm_stats(p, n, 1.0 + r * 1e-9)
        best = min(best, (time.perf_counter() - t0) / reps / n * 1e9)
    if sink != sink:  # (uses the sums, so that they are computed)
        best = float("nan")
    return best, ("plain", "avx2", "avx512")[bnorm_stats_form()]
