// The engine boundary of the C edge: one small interface, one file per engine.
// make_engine() picks the engine the build has; a TensorRT engine would be another file here,
// compiled only where CMake finds TensorRT (none exists yet).
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace tlc {

class Engine {
  public:
    virtual ~Engine() = default;
    // Run on a float32 input of ``shape``; fill ``out`` and ``out_shape``. False and ``err`` on failure.
    virtual bool run(const float *in, const std::vector<int> &shape, std::vector<float> &out, std::vector<int> &out_shape,
                     std::string &err) = 0;
};

// nullptr and ``err`` if the ONNX file cannot be loaded.
std::unique_ptr<Engine> make_engine(const std::string &onnx_path, std::string &err);

}  // namespace tlc
