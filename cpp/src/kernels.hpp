// The kernels behind the C API, one template per op. Each kernel source is
// compiled once per instruction set into namespace bnorm::<isa> (simd.hpp);
// dispatch.cpp picks one set at run time. Arguments are already validated
// by api.cpp; a kernel fails only by throwing std::bad_alloc from its
// scratch allocation, before any output is written.
#pragma once

#include <cstdint>

#include "bnorm/bnorm.h"

#include "half.hpp"
#include "plan.hpp"

// Data of type T (float, double, Half, BFloat16); parameters, statistics and
// arithmetic of type P = Param<T> (float for the half types).
#define BNORM_DECLARE_KERNELS(ns)                                            \
  namespace ns {                                                             \
  template <class T>                                                         \
  void forward_training(const Plan& plan, const T* x, const T* residual,     \
                        T* y, const Param<T>* weight, const Param<T>* bias,  \
                        Param<T>* save_mean, Param<T>* save_invstd,          \
                        Param<T>* running_mean, Param<T>* running_var,       \
                        double eps, double momentum, bool unbiased,          \
                        bool relu);                                          \
  template <class T>                                                         \
  void forward_inference(const Plan& plan, const T* x, const T* residual,    \
                         T* y, const Param<T>* mean, const Param<T>* var,    \
                         const Param<T>* weight, const Param<T>* bias,       \
                         double eps, bool relu);                             \
  template <class T>                                                         \
  void backward(const Plan& plan, const T* dy, const T* x, const T* y,       \
                const Param<T>* mean, const Param<T>* invstd,                \
                const Param<T>* weight, const Param<T>* bias, T* dx,         \
                Param<T>* dweight, Param<T>* dbias, T* dresidual,            \
                bool frozen, bool relu);                                     \
  template <class T>                                                         \
  void moments(const Plan& plan, const T* x, double* mean, double* m2);      \
  template <class T>                                                         \
  void forward_apply(const Plan& plan, const T* x, T* y,                     \
                     const Param<T>* weight, const Param<T>* bias,           \
                     const double* mean, const double* m2, double count,     \
                     Param<T>* save_mean, Param<T>* save_invstd,             \
                     Param<T>* running_mean, Param<T>* running_var,          \
                     double eps, double momentum, bool unbiased);            \
  template <class T>                                                         \
  void backward_sums(const Plan& plan, const T* dy, const T* x,              \
                     const Param<T>* mean, double* sum_dy,                   \
                     double* sum_dy_xmu);                                    \
  template <class T>                                                         \
  void backward_apply(const Plan& plan, const T* dy, const T* x,             \
                      const Param<T>* mean, const Param<T>* invstd,          \
                      const Param<T>* weight, const double* sum_dy,          \
                      const double* sum_dy_xmu, double count, T* dx,         \
                      Param<T>* dweight, Param<T>* dbias);                   \
  }

namespace bnorm {

#ifdef BNORM_ISA_NS
BNORM_DECLARE_KERNELS(BNORM_ISA_NS)
#endif

template <class T>
struct Kernels {
  typedef Param<T> P;
  // residual (may be null) and relu: the fused epilogue y = relu(BN(x) + z)
  void (*forward_training)(const Plan&, const T*, const T*, T*, const P*,
                           const P*, P*, P*, P*, P*, double, double, bool, bool);
  void (*forward_inference)(const Plan&, const T*, const T*, T*, const P*,
                            const P*, const P*, const P*, double, bool);
  // y (the forward's output, for the ReLU mask; may be null), bias, dresidual
  void (*backward)(const Plan&, const T*, const T*, const T*, const P*,
                   const P*, const P*, const P*, T*, P*, P*, T*, bool, bool);
  // the split phases, for statistics spanning several processes
  void (*moments)(const Plan&, const T*, double*, double*);
  void (*forward_apply)(const Plan&, const T*, T*, const P*, const P*,
                        const double*, const double*, double, P*, P*, P*, P*,
                        double, double, bool);
  void (*backward_sums)(const Plan&, const T*, const T*, const P*, double*,
                        double*);
  void (*backward_apply)(const Plan&, const T*, const T*, const P*, const P*,
                         const P*, const double*, const double*, double, T*,
                         P*, P*);
};

// The kernels of the instruction set chosen for this process.
template <class T>
const Kernels<T>& kernels();

// Calls f(T()) with the data type of `dtype` (known to be valid).
template <class F>
void with_type(bnorm_dtype dtype, F&& f) {
  switch (dtype) {
    case BNORM_FLOAT32: f(float()); break;
    case BNORM_FLOAT64: f(double()); break;
    case BNORM_FLOAT16: f(Half()); break;
    default: f(BFloat16()); break;
  }
}

// Its name ("avx512", "avx2", "sse2", "baseline" or "scalar").
const char* kernel_isa();

}  // namespace bnorm
