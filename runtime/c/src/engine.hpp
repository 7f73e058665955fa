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
    // Run on one input: ``in`` holds the elements of ``shape`` in C order, of protocol dtype
    // ``dtype`` (TLC_F32, TLC_U8, ... of tlcut.h), aligned for that type. Fills ``out`` (float32)
    // and ``out_shape``. False and a one-line ``err`` where the engine cannot run it.
    virtual bool run(const void *in, int dtype, const std::vector<int> &shape, std::vector<float> &out,
                     std::vector<int> &out_shape, std::string &err) = 0;
};

// nullptr and ``err`` if the ONNX file cannot be loaded.
std::unique_ptr<Engine> make_engine(const std::string &onnx_path, std::string &err);

}  // namespace tlc
