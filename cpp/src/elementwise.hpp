// The elementwise passes shared by the ops.
#pragma once

#include <cstdint>

namespace bnorm {

// y = ((x - mh) - ml) * s + b over n contiguous values of one channel.
// mean = mh + ml split into a value of T and its rounding error keeps x - mean
// accurate in float even for data far from zero (offset >> std).
template <class T>
inline void affine_run(const T* x, T* y, int64_t n, T mh, T ml, T s, T b) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = ((x[i] - mh) - ml) * s + b;
}

// The same over `rows` rows of `cw` contiguous channels, row stride `ld`;
// coefficients indexed by channel within the block.
template <class T>
inline void affine_rows(const T* x, T* y, int64_t rows, int64_t ld,
                        int64_t cw, const T* mh, const T* ml, const T* s,
                        const T* b) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld;
    T* yr = y + r * ld;
#pragma omp simd
    for (int64_t j = 0; j < cw; ++j) yr[j] = ((xr[j] - mh[j]) - ml[j]) * s[j] + b[j];
  }
}

}  // namespace bnorm
