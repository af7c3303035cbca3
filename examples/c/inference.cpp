// bnorm from C++: an inference runtime's view.
//
//  - a small RAII-free wrapper that turns bnorm statuses into exceptions;
//  - inference on a channels-last (NHWC) tensor;
//  - the per-channel scale/shift for a runtime's own fused kernel;
//  - a linear layer with the batch norm folded into its weights;
//  - bnorm's parallel work run on the host's threads (std::thread), with
//    the same bytes as before.
// Exits non-zero if any result is off.
#include <bnorm/bnorm.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

void check(bnorm_status status, const char* what) {
  if (status != BNORM_OK)
    throw std::runtime_error(std::string(what) + ": " + bnorm_status_string(status));
}

// The host's parallel-for: one std::thread per task beyond the first, which
// runs on the calling thread.
void host_parallel_for(void* /*pool*/, int64_t n, bnorm_task_fn task, void* ctx) {
  std::vector<std::thread> workers;
  for (int64_t i = 1; i < n; ++i) workers.emplace_back(task, ctx, i);
  if (n > 0) task(ctx, 0);
  for (auto& w : workers) w.join();
}

bool close(double a, double b, double tol) {
  return std::fabs(a - b) <= tol * (1.0 + std::fabs(b));
}

}  // namespace

int main() try {
  const int64_t n = 8, h = 16, w = 16, c = 32;  // NHWC
  const int64_t rows = n * h * w;
  std::vector<float> x(rows * c), y(rows * c), y_host(rows * c);
  std::vector<float> mean(c), var(c), gamma(c), beta(c);
  for (int64_t k = 0; k < c; ++k) {
    mean[k] = 0.1f * k;
    var[k] = 1.0f + 0.05f * k;
    gamma[k] = 1.0f + 0.01f * k;
    beta[k] = -0.2f * k;
  }
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.001f * i) * 3.0f;

  // Channels last: outer = N*H*W, inner = 1.
  check(bnorm_forward_inference(BNORM_FLOAT32, rows, c, 1, x.data(), y.data(),
                                mean.data(), var.data(), gamma.data(), beta.data(), 1e-5),
        "inference");

  // The same with the runtime's own y = x * scale + shift.
  std::vector<float> scale(c), shift(c);
  check(bnorm_inference_scale_shift(BNORM_FLOAT32, c, mean.data(), var.data(),
                                    gamma.data(), beta.data(), 1e-5, scale.data(),
                                    shift.data()),
        "scale/shift");
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < c; ++k)
      if (!close(x[r * c + k] * scale[k] + shift[k], y[r * c + k], 1e-5))
        throw std::runtime_error("scale/shift disagrees with inference");

  // A linear layer [c_out = c, c_in = 4] followed by this batch norm, folded.
  const int64_t c_in = 4;
  std::vector<float> lw(c * c_in), lb(c), fw(c * c_in), fb(c);
  for (size_t i = 0; i < lw.size(); ++i) lw[i] = 0.01f * float(i % 17) - 0.05f;
  for (int64_t k = 0; k < c; ++k) lb[k] = 0.02f * k;
  check(bnorm_fold_into_layer(BNORM_FLOAT32, 1, c, c_in, lw.data(), lb.data(),
                              mean.data(), var.data(), gamma.data(), beta.data(), 1e-5,
                              fw.data(), fb.data()),
        "fold");
  const float in[4] = {0.5f, -1.0f, 2.0f, 0.25f};
  for (int64_t k = 0; k < c; ++k) {
    double h_k = lb[k], folded = fb[k];
    for (int64_t j = 0; j < c_in; ++j) {
      h_k += double(lw[k * c_in + j]) * in[j];
      folded += double(fw[k * c_in + j]) * in[j];
    }
    const double bn = (h_k - mean[k]) / std::sqrt(double(var[k]) + 1e-5) * gamma[k] + beta[k];
    if (!close(folded, bn, 1e-5)) throw std::runtime_error("folded layer disagrees");
  }

  // The host's threads: bitwise the same output.
  check(bnorm_set_parallel_for(host_parallel_for, nullptr, 4), "set_parallel_for");
  check(bnorm_forward_inference(BNORM_FLOAT32, rows, c, 1, x.data(), y_host.data(),
                                mean.data(), var.data(), gamma.data(), beta.data(), 1e-5),
        "inference on host threads");
  std::printf("threading %s, %d threads\n", bnorm_threading_backend(),
              bnorm_get_num_threads());
  check(bnorm_set_parallel_for(nullptr, nullptr, 0), "reset parallel_for");
  if (std::memcmp(y.data(), y_host.data(), y.size() * sizeof(float)) != 0)
    throw std::runtime_error("host threads changed the result");

  // Errors are statuses; the wrapper makes them exceptions.
  try {
    check(bnorm_forward_inference(BNORM_FLOAT32, -1, c, 1, x.data(), y.data(),
                                  mean.data(), var.data(), nullptr, nullptr, 1e-5),
          "inference with a negative size");
    throw std::logic_error("no error reported");
  } catch (const std::runtime_error& e) {
    std::printf("as expected: %s\n", e.what());
  }
  std::printf("y[0..3] = %.5f %.5f %.5f %.5f\nok\n", y[0], y[1], y[2], y[3]);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
