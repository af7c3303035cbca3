// bnorm inside OpenVINO: three operations of the extension's own opset, and
// the ONNX nodes of domain "ai.bnorm" that map to them.
//
//   BatchNormInference(X, scale, B, mean, var) -> Y
//       attributes epsilon (float, 1e-5), axis (int, 1: the channel axis;
//       -1 for channels-last, any axis in [-rank, rank))
//   BatchNormAddReluInference(X, residual, scale, B, mean, var) -> Y
//       Y = max(BN(X) + residual, 0); epsilon, axis, relu (int, 1; 0: no ReLU)
//   BatchNormTraining(X, scale, B) -> Y, saved_mean, saved_invstd
//       batch statistics (OpenVINO has no training-mode batch norm); the
//       biased variance, saved_invstd = 1 / sqrt(var + epsilon); epsilon, axis
//
// X is float32, float64, float16 or bfloat16, dense in its memory order, of
// rank >= 2; the per-channel inputs and outputs are float32 (float64 for
// float64 data), as bnorm's C API takes them.
//
// Threads: while one of these operations runs, bnorm's parallel work goes to
// OpenVINO's own (TBB) threads through bnorm_set_parallel_for, so no second
// pool runs beside the runtime's; outside them bnorm is left as it was.
// bnorm_openvino_threads_seen() reports how many distinct threads have run
// bnorm tasks so far (the test reads it).
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "bnorm/bnorm.h"
#include "openvino/core/extension.hpp"
#include "openvino/core/op_extension.hpp"
#include "openvino/core/parallel.hpp"
#include "openvino/frontend/onnx/extension/conversion.hpp"
#include "openvino/op/op.hpp"

namespace {

std::atomic<int> g_threads_seen{0};

void on_openvino_threads(void*, int64_t n, bnorm_task_fn task, void* task_context) {
  ov::parallel_for(static_cast<size_t>(n), [&](size_t i) {
    thread_local bool counted = false;
    if (!counted) {
      counted = true;
      g_threads_seen.fetch_add(1, std::memory_order_relaxed);
    }
    task(task_context, static_cast<int64_t>(i));
  });
}

// While an operation of this extension runs, bnorm's parallel work goes to
// OpenVINO's threads; when none runs, bnorm is as the process had it (its
// OpenMP threads for a NumPy call, say). Counted, so that concurrent
// inference streams share the setting: the first in sets it, the last out
// takes it back. The thread count is the arena's of the stream that set it.
std::mutex g_scope_mutex;
int g_in_flight = 0;

class OnOpenVinoThreads {
 public:
  OnOpenVinoThreads() {
    std::lock_guard<std::mutex> lock(g_scope_mutex);
    if (g_in_flight++ == 0) {
      const int threads = parallel_get_max_threads();
      bnorm_set_parallel_for(&on_openvino_threads, nullptr, threads > 0 ? threads : 1);
    }
  }
  ~OnOpenVinoThreads() {
    std::lock_guard<std::mutex> lock(g_scope_mutex);
    if (--g_in_flight == 0) bnorm_set_parallel_for(nullptr, nullptr, 0);
  }
  OnOpenVinoThreads(const OnOpenVinoThreads&) = delete;
  OnOpenVinoThreads& operator=(const OnOpenVinoThreads&) = delete;
};

void check(bnorm_status status, const char* what) {
  if (status != BNORM_OK) OPENVINO_THROW("bnorm: ", what, ": ", bnorm_status_string(status));
}

bnorm_dtype data_dtype(const ov::element::Type& t) {
  if (t == ov::element::f32) return BNORM_FLOAT32;
  if (t == ov::element::f64) return BNORM_FLOAT64;
  if (t == ov::element::f16) return BNORM_FLOAT16;
  if (t == ov::element::bf16) return BNORM_BFLOAT16;
  return 0;
}

ov::element::Type param_type(const ov::element::Type& data) {
  return data == ov::element::f64 ? ov::element::f64 : ov::element::f32;
}

// The tensor as bnorm sees it: outer x channels x inner around the axis.
struct Split {
  int64_t outer = 1, channels = 1, inner = 1;
};

Split split(const ov::Shape& shape, int64_t axis) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t a = axis < 0 ? axis + rank : axis;
  Split s;
  for (int64_t i = 0; i < rank; ++i) {
    const auto d = static_cast<int64_t>(shape[i]);
    if (i < a) s.outer *= d;
    else if (i == a) s.channels = d;
    else s.inner *= d;
  }
  return s;
}

// What the three operations share: the attributes, the checks of the types
// and shapes, the outputs' types.
class BnormOp : public ov::op::Op {
 public:
  BnormOp() = default;
  BnormOp(const ov::OutputVector& args, float epsilon, int64_t axis)
      : ov::op::Op(args), epsilon_(epsilon), axis_(axis) {}

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("epsilon", epsilon_);
    visitor.on_attribute("axis", axis_);
    return true;
  }
  bool has_evaluate() const override { return true; }

 protected:
  // Checks the inputs (data inputs first, then per-channel ones) and sets
  // output 0 like X and the rest to per-channel vectors.
  void infer(size_t data_inputs, size_t channel_outputs) {
    const auto& xt = get_input_element_type(0);
    const auto& xs = get_input_partial_shape(0);
    NODE_VALIDATION_CHECK(this, data_dtype(xt) != 0,
                          "bnorm: X must be f32, f64, f16 or bf16, not ", xt);
    NODE_VALIDATION_CHECK(this, xs.rank().is_dynamic() || xs.rank().get_length() >= 2,
                          "bnorm: X must have rank >= 2");
    ov::Dimension channels = ov::Dimension::dynamic();
    if (xs.rank().is_static()) {
      const int64_t rank = xs.rank().get_length();
      NODE_VALIDATION_CHECK(this, axis_ >= -rank && axis_ < rank, "bnorm: axis ", axis_,
                            " is out of range for rank ", rank);
      channels = xs[axis_ < 0 ? axis_ + rank : axis_];
    }
    for (size_t i = 1; i < data_inputs; ++i) {
      NODE_VALIDATION_CHECK(this, get_input_element_type(i) == xt &&
                                      get_input_partial_shape(i).compatible(xs),
                            "bnorm: input ", i, " must have X's type and shape");
    }
    const auto pt = param_type(xt);
    for (size_t i = data_inputs; i < get_input_size(); ++i) {
      const auto& s = get_input_partial_shape(i);
      NODE_VALIDATION_CHECK(this, get_input_element_type(i) == pt,
                            "bnorm: input ", i, " must be ", pt, " for ", xt, " data");
      NODE_VALIDATION_CHECK(this, s.compatible(ov::PartialShape{channels}),
                            "bnorm: input ", i, " must be a vector of the channel count");
    }
    NODE_VALIDATION_CHECK(this, epsilon_ > 0, "bnorm: epsilon must be > 0");
    set_output_type(0, xt, xs);
    for (size_t k = 0; k < channel_outputs; ++k) set_output_type(1 + k, pt, ov::PartialShape{channels});
  }

  // Output 0 shaped like X, the rest per channel; the split of X.
  Split prepare(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
    const auto& shape = inputs[0].get_shape();
    outputs[0].set_shape(shape);
    const Split s = split(shape, axis_);
    for (size_t k = 1; k < outputs.size(); ++k)
      outputs[k].set_shape(ov::Shape{static_cast<size_t>(s.channels)});
    return s;
  }

  float epsilon_ = 1e-5f;
  int64_t axis_ = 1;
};

class BatchNormInference : public BnormOp {
 public:
  OPENVINO_OP("BatchNormInference", "bnorm");
  BatchNormInference() = default;
  BatchNormInference(const ov::OutputVector& args, float epsilon, int64_t axis)
      : BnormOp(args, epsilon, axis) {
    constructor_validate_and_infer_types();
  }
  void validate_and_infer_types() override { infer(1, 0); }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
    return std::make_shared<BatchNormInference>(args, epsilon_, axis_);
  }
  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    const Split s = prepare(outputs, inputs);
    const OnOpenVinoThreads on_openvino_threads_now;
    check(bnorm_forward_inference(data_dtype(inputs[0].get_element_type()), s.outer, s.channels,
                                  s.inner, inputs[0].data(), outputs[0].data(), inputs[3].data(),
                                  inputs[4].data(), inputs[1].data(), inputs[2].data(), epsilon_),
          "BatchNormInference");
    return true;
  }
};

class BatchNormAddReluInference : public BnormOp {
 public:
  OPENVINO_OP("BatchNormAddReluInference", "bnorm");
  BatchNormAddReluInference() = default;
  BatchNormAddReluInference(const ov::OutputVector& args, float epsilon, int64_t axis, int64_t relu)
      : BnormOp(args, epsilon, axis), relu_(relu) {
    constructor_validate_and_infer_types();
  }
  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    BnormOp::visit_attributes(visitor);
    visitor.on_attribute("relu", relu_);
    return true;
  }
  void validate_and_infer_types() override { infer(2, 0); }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
    return std::make_shared<BatchNormAddReluInference>(args, epsilon_, axis_, relu_);
  }
  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    const Split s = prepare(outputs, inputs);
    const OnOpenVinoThreads on_openvino_threads_now;
    check(bnorm_forward_inference_fused(
              data_dtype(inputs[0].get_element_type()), s.outer, s.channels, s.inner,
              inputs[0].data(), inputs[1].data(), outputs[0].data(), inputs[4].data(),
              inputs[5].data(), inputs[2].data(), inputs[3].data(), epsilon_,
              relu_ ? BNORM_FLAG_RELU : 0u),
          "BatchNormAddReluInference");
    return true;
  }

 private:
  int64_t relu_ = 1;
};

class BatchNormTraining : public BnormOp {
 public:
  OPENVINO_OP("BatchNormTraining", "bnorm");
  BatchNormTraining() = default;
  BatchNormTraining(const ov::OutputVector& args, float epsilon, int64_t axis)
      : BnormOp(args, epsilon, axis) {
    constructor_validate_and_infer_types();
  }
  void validate_and_infer_types() override { infer(1, 2); }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
    return std::make_shared<BatchNormTraining>(args, epsilon_, axis_);
  }
  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    const Split s = prepare(outputs, inputs);
    const OnOpenVinoThreads on_openvino_threads_now;
    check(bnorm_forward_training(data_dtype(inputs[0].get_element_type()), s.outer, s.channels,
                                 s.inner, inputs[0].data(), outputs[0].data(), inputs[1].data(),
                                 inputs[2].data(), outputs[1].data(), outputs[2].data(), nullptr,
                                 nullptr, epsilon_, 0.0, 0u),
          "BatchNormTraining");
    return true;
  }
};

// ONNX: the node's inputs in order; attributes with their defaults.
template <class Op>
ov::OutputVector convert(const ov::frontend::NodeContext& node) {
  ov::OutputVector args;
  for (size_t i = 0; i < node.get_input_size(); ++i) args.push_back(node.get_input(static_cast<int>(i)));
  const float eps = node.get_attribute<float>("epsilon", 1e-5f);
  const int64_t axis = node.get_attribute<int64_t>("axis", 1);
  std::shared_ptr<ov::Node> op;
  if constexpr (std::is_same_v<Op, BatchNormAddReluInference>)
    op = std::make_shared<Op>(args, eps, axis, node.get_attribute<int64_t>("relu", 1));
  else
    op = std::make_shared<Op>(args, eps, axis);
  return op->outputs();
}

template <class Op>
ov::Extension::Ptr onnx_node() {
  return std::make_shared<ov::frontend::onnx::ConversionExtension>(
      Op::get_type_info_static().name, "ai.bnorm", convert<Op>);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int bnorm_openvino_threads_seen(void) {
  return g_threads_seen.load();
}

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<BatchNormInference>>(),
    std::make_shared<ov::OpExtension<BatchNormAddReluInference>>(),
    std::make_shared<ov::OpExtension<BatchNormTraining>>(),
    onnx_node<BatchNormInference>(),
    onnx_node<BatchNormAddReluInference>(),
    onnx_node<BatchNormTraining>(),
}));
