// The kernels behind the C API, one template per op. Each kernel source is
// compiled once per instruction set into namespace bnorm::<isa> (simd.hpp);
// dispatch.cpp picks one set at run time. Arguments are already validated
// by api.cpp; a kernel fails only by throwing std::bad_alloc from its
// scratch allocation, before any output is written.
#pragma once

#include <cstdint>

#include "plan.hpp"

#define BNORM_DECLARE_KERNELS(ns)                                            \
  namespace ns {                                                             \
  template <class T>                                                         \
  void forward_training(const Plan& plan, const T* x, const T* residual,     \
                        T* y, const T* weight, const T* bias, T* save_mean,  \
                        T* save_invstd, T* running_mean, T* running_var,     \
                        double eps, double momentum, bool unbiased,          \
                        bool relu);                                          \
  template <class T>                                                         \
  void forward_inference(const Plan& plan, const T* x, const T* residual,    \
                         T* y, const T* mean, const T* var, const T* weight, \
                         const T* bias, double eps, bool relu);              \
  template <class T>                                                         \
  void backward(const Plan& plan, const T* dy, const T* x, const T* y,       \
                const T* mean, const T* invstd, const T* weight,             \
                const T* bias, T* dx, T* dweight, T* dbias, T* dresidual,    \
                bool frozen, bool relu);                                     \
  template <class T>                                                         \
  void moments(const Plan& plan, const T* x, double* mean, double* m2);      \
  template <class T>                                                         \
  void forward_apply(const Plan& plan, const T* x, T* y, const T* weight,    \
                     const T* bias, const double* mean, const double* m2,    \
                     double count, T* save_mean, T* save_invstd,             \
                     T* running_mean, T* running_var, double eps,            \
                     double momentum, bool unbiased);                        \
  template <class T>                                                         \
  void backward_sums(const Plan& plan, const T* dy, const T* x,              \
                     const T* mean, double* sum_dy, double* sum_dy_xmu);     \
  template <class T>                                                         \
  void backward_apply(const Plan& plan, const T* dy, const T* x,             \
                      const T* mean, const T* invstd, const T* weight,       \
                      const double* sum_dy, const double* sum_dy_xmu,        \
                      double count, T* dx, T* dweight, T* dbias);            \
  }

namespace bnorm {

#ifdef BNORM_ISA_NS
BNORM_DECLARE_KERNELS(BNORM_ISA_NS)
#endif

template <class T>
struct Kernels {
  // residual (may be null) and relu: the fused epilogue y = relu(BN(x) + z)
  void (*forward_training)(const Plan&, const T*, const T*, T*, const T*,
                           const T*, T*, T*, T*, T*, double, double, bool, bool);
  void (*forward_inference)(const Plan&, const T*, const T*, T*, const T*,
                            const T*, const T*, const T*, double, bool);
  // y (the forward's output, for the ReLU mask; may be null), bias, dresidual
  void (*backward)(const Plan&, const T*, const T*, const T*, const T*,
                   const T*, const T*, const T*, T*, T*, T*, T*, bool, bool);
  // the split phases, for statistics spanning several processes
  void (*moments)(const Plan&, const T*, double*, double*);
  void (*forward_apply)(const Plan&, const T*, T*, const T*, const T*,
                        const double*, const double*, double, T*, T*, T*, T*,
                        double, double, bool);
  void (*backward_sums)(const Plan&, const T*, const T*, const T*, double*,
                        double*);
  void (*backward_apply)(const Plan&, const T*, const T*, const T*, const T*,
                         const T*, const double*, const double*, double, T*,
                         T*, T*);
};

// The kernels of the instruction set chosen for this process.
template <class T>
const Kernels<T>& kernels();

// Its name ("avx512", "avx2", "sse2", "baseline" or "scalar").
const char* kernel_isa();

}  // namespace bnorm
