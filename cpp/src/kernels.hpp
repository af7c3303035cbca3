// The kernels behind the C API, one template per op, instantiated for float
// and double in their own translation units. Arguments are already
// validated by api.cpp; these functions do not fail except by throwing
// std::bad_alloc from their scratch allocation, before any output is written.
#pragma once

#include <cstdint>

#include "plan.hpp"

namespace bnorm {

template <class T>
void forward_training(const Plan& plan, const T* x, T* y, const T* weight,
                      const T* bias, T* save_mean, T* save_invstd,
                      T* running_mean, T* running_var, double eps,
                      double momentum, bool unbiased);

template <class T>
void forward_inference(const Plan& plan, const T* x, T* y, const T* mean,
                       const T* var, const T* weight, const T* bias,
                       double eps);

template <class T>
void backward(const Plan& plan, const T* dy, const T* x, const T* mean,
              const T* invstd, const T* weight, T* dx, T* dweight, T* dbias,
              bool frozen);

}  // namespace bnorm
