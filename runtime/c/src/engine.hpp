// The engine boundary of the C edge: one small interface, one file per engine. A build links one
// engine (CMake's TLCUT_ENGINE): engine_openvino.cpp (OpenVINO's C API, from the `openvino`
// wheel) or engine_opencv.cpp (Debian's OpenCV DNN, for boxes with Debian packages only).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tlc {

// What a half takes and gives, as the bundle's manifest lists it (protocol dtypes of tlcut.h).
struct Spec {
    int in_dtype = 0;
    std::vector<int64_t> in_shape;
    int out_dtype = 0;
};

// A result: ``data`` is the engine's own memory, valid until the engine's next run.
struct Output {
    const void *data = nullptr;
    size_t bytes = 0;
    int dtype = 0;  // a protocol dtype
    std::vector<int64_t> shape;
};

class Engine {
  public:
    virtual ~Engine() = default;
    // Run on one input of the Spec's dtype and shape (C order, aligned for its type; the engine
    // does not keep it). False and a one-line ``err`` where the engine cannot run it.
    virtual bool run(const void *in, Output &out, std::string &err) = 0;
};

// Settings an edge gives the engines it loads.
struct Options {
    int threads = 0;  // inference threads per half; 0: the engine's own choice
};

// What one edge's engines share (OpenVINO: one Core, so the CPU plugin is loaded once). It must
// outlive every Engine it made.
class Runtime {
  public:
    virtual ~Runtime() = default;
    // nullptr and a one-line ``err`` if the ONNX file cannot be loaded for ``spec``.
    virtual std::unique_ptr<Engine> load(const std::string &onnx_path, const Spec &spec, const Options &opt,
                                         std::string &err) = 0;
};

// nullptr and ``err`` if the engine cannot start.
std::unique_ptr<Runtime> make_runtime(std::string &err);

// "openvino 2026.4.1", "opencv 4.6.0": this build's engine and its version (a static string).
const char *engine_name();

}  // namespace tlc
