// OpenVINO as the C edge's CPU engine, through its C API (openvino/c/openvino.h, from the
// `openvino` wheel). The C API, not the C++ one: it is OpenVINO's stable ABI, so libtlcut does not
// depend on the wheel's C++ standard-library ABI or compiler, and it has all this file needs.
// OpenVINO reads ONNX at any opset, takes every protocol dtype as the model declares it, and runs
// QDQ int8 halves on int8 kernels. Settings are those of the Python edge's OpenVINO backend
// (runtime/backends/openvino.py), so both edges give the same answers.
#include <openvino/c/openvino.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#define TLC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TLC_ASAN 1
#endif
#endif

#include "engine.hpp"
#include "internal.hpp"
#include "tlcut.h"

namespace tlc {

namespace {

ov_element_type_e ov_type(int dtype) {
    switch (dtype) {
    case TLC_F32: return F32;
    case TLC_F16: return F16;
    case TLC_I8: return I8;
    case TLC_U8: return U8;
    case TLC_I32: return I32;
    case TLC_I64: return I64;
    case TLC_F64: return F64;
    default: return DYNAMIC;
    }
}

int protocol_type(ov_element_type_e t) {
    switch (t) {
    case F32: return TLC_F32;
    case F16: return TLC_F16;
    case I8: return TLC_I8;
    case U8: return TLC_U8;
    case I32: return TLC_I32;
    case I64: return TLC_I64;
    case F64: return TLC_F64;
    default: return 0;
    }
}

// OpenVINO's messages are several "Exception from FILE:LINE:" lines around the one that says what
// is wrong: keep that one.
std::string ov_error(ov_status_e s) {
    const char *m = ov_get_last_err_msg();
    std::string text = m && *m ? m : "", best;
    size_t at = 0;
    while (at <= text.size()) {
        size_t nl = text.find('\n', at);
        std::string line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
        while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
        if (!line.empty() && line.rfind("Exception from ", 0) != 0) best += (best.empty() ? "" : " ") + line;
        if (nl == std::string::npos) break;
        at = nl + 1;
    }
    if (best.empty()) best = ov_get_error_info(s);
    return best.substr(0, 300);
}

std::string dims(const int64_t *d, int64_t rank) {
    std::string s = "[";
    for (int64_t i = 0; i < rank; i++) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
}


// Whether ``path`` is a protobuf message whose top-level fields all parse, one of them ModelProto's
// graph (field 7). OpenVINO tries every frontend on a file its ONNX reader refuses, and the
// TensorFlow one then writes protobuf noise to stderr: a damaged half is refused here, in one line.
bool onnx_file(const std::string &path, std::string &why) {
    std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!f) {
        why = "cannot be opened";
        return false;
    }
    auto varint = [&](uint64_t &v) {
        v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            int c = std::fgetc(f.get());
            if (c == EOF) return false;
            v |= uint64_t(c & 0x7f) << shift;
            if (!(c & 0x80)) return true;
        }
        return false;
    };
    if (std::fseek(f.get(), 0, SEEK_END) != 0) {
        why = "cannot be read";
        return false;
    }
    long size = std::ftell(f.get());
    std::rewind(f.get());
    bool graph = false;
    uint64_t key, len;
    while (std::ftell(f.get()) < size) {
        if (!varint(key)) break;
        int wire = int(key & 7);
        long at = std::ftell(f.get());
        if (wire == 0 && varint(len)) continue;
        if (wire == 2 && varint(len) && len <= uint64_t(size - std::ftell(f.get()))) {
            graph |= (key >> 3) == 7;
            std::fseek(f.get(), long(len), SEEK_CUR);
            continue;
        }
        if ((wire == 1 || wire == 5) && at + (wire == 1 ? 8 : 4) <= size) {
            std::fseek(f.get(), wire == 1 ? 8 : 4, SEEK_CUR);
            continue;
        }
        break;
    }
    if (std::ftell(f.get()) != size || !graph) {
        why = "is not an ONNX model (damaged or cut short)";
        return false;
    }
    return true;
}

using Core = std::shared_ptr<ov_core_t>;

class OpenVINOEngine : public Engine {
  public:
    OpenVINOEngine(Core core, ov_compiled_model_t *compiled, ov_infer_request_t *req, const Spec &spec)
        : core_(std::move(core)), compiled_(compiled), req_(req), in_type_(ov_type(spec.in_dtype)), in_dims_(spec.in_shape) {}
    ~OpenVINOEngine() override {
        if (out_) ov_tensor_free(out_);
        ov_infer_request_free(req_);
        ov_compiled_model_free(compiled_);
    }

    bool run(const void *in, Output &out, std::string &err) override {
        // The request's bytes are the input tensor as they are: no copy, no conversion.
        ov_shape_t shape = {int64_t(in_dims_.size()), in_dims_.data()};
        ov_tensor_t *t = nullptr;
        ov_status_e s = ov_tensor_create_from_host_ptr(in_type_, shape, const_cast<void *>(in), &t);
        if (s == OK) s = ov_infer_request_set_input_tensor(req_, t);
        if (s == OK) s = ov_infer_request_infer(req_);
        if (t) ov_tensor_free(t);
        if (out_) {
            ov_tensor_free(out_);
            out_ = nullptr;
        }
        if (s == OK) s = ov_infer_request_get_output_tensor(req_, &out_);
        void *data = nullptr;
        ov_element_type_e type = DYNAMIC;
        ov_shape_t oshape = {0, nullptr};
        if (s == OK) s = ov_tensor_data(out_, &data);
        if (s == OK) s = ov_tensor_get_element_type(out_, &type);
        if (s == OK) s = ov_tensor_get_byte_size(out_, &out.bytes);
        if (s == OK) s = ov_tensor_get_shape(out_, &oshape);
        if (s != OK) {
            err = ov_error(s);
            return false;
        }
        out.shape.assign(oshape.dims, oshape.dims + oshape.rank);
        ov_shape_free(&oshape);
        out.dtype = protocol_type(type);
        out.data = data;
        if (!out.dtype) {
            err = "OpenVINO answered with element type " + std::to_string(int(type)) + ", which the wire protocol has no code for";
            return false;
        }
        return true;
    }

  private:
    Core core_;  // the compiled model's plugin lives in the Core
    ov_compiled_model_t *compiled_;
    ov_infer_request_t *req_;
    ov_tensor_t *out_ = nullptr;  // holds the last result's memory until the next run
    ov_element_type_e in_type_;
    std::vector<int64_t> in_dims_;
};

// The element type and static shape of a compiled model's port; false if the shape is dynamic.
bool port_info(const ov_output_const_port_t *p, ov_element_type_e &type, std::vector<int64_t> &shape) {
    ov_shape_t s = {0, nullptr};
    if (ov_port_get_element_type(p, &type) != OK || ov_const_port_get_shape(p, &s) != OK) return false;
    shape.assign(s.dims, s.dims + s.rank);
    ov_shape_free(&s);
    return true;
}

class OpenVINORuntime : public Runtime {
  public:
    explicit OpenVINORuntime(Core core) : core_(std::move(core)) {}

    std::unique_ptr<Engine> load(const std::string &path, const Spec &spec, const Options &opt, std::string &err) override {
        auto fail = [&](const std::string &what, ov_status_e s) {
            err = "OpenVINO cannot " + what + " " + path + ": " + ov_error(s);
            return nullptr;
        };
        if (ov_type(spec.in_dtype) == DYNAMIC) {
            err = path + " takes an input of protocol dtype " + std::to_string(spec.in_dtype) + ", which OpenVINO has no type for";
            return nullptr;
        }
        std::string why;
        if (!onnx_file(path, why)) {
            err = path + " " + why;
            return nullptr;
        }
        ov_model_t *model = nullptr;
        ov_status_e s = ov_core_read_model(core_.get(), path.c_str(), nullptr, &model);
        if (s != OK) return fail("read", s);
        std::unique_ptr<ov_model_t, void (*)(ov_model_t *)> m(model, ov_model_free);
        size_t n_in = 0, n_out = 0;
        if ((s = ov_model_inputs_size(model, &n_in)) != OK || (s = ov_model_outputs_size(model, &n_out)) != OK)
            return fail("inspect", s);
        if (n_in != 1 || n_out < 1) {
            err = path + " has " + std::to_string(n_in) + " inputs and " + std::to_string(n_out) +
                  " outputs; a half has one input and at least one output";
            return nullptr;
        }
        if (ov_model_is_dynamic(model)) {  // fix the manifest's shape, so the CPU plugin compiles static kernels
            ov_partial_shape_t ps;
            if ((s = ov_partial_shape_create_static(int64_t(spec.in_shape.size()), spec.in_shape.data(), &ps)) != OK)
                return fail("reshape", s);
            s = ov_model_reshape_single_input(model, ps);
            ov_partial_shape_free(&ps);
            if (s != OK) return fail("reshape", s);
        }
        // As the Python edge's OpenVINO backend: the CPU plugin would otherwise run float32 layers
        // in bf16 where the CPU has it, and answer 0.5% off.
        ov_compiled_model_t *compiled = nullptr;
        if (opt.threads > 0) {
            std::string n = std::to_string(opt.threads);
            s = ov_core_compile_model(core_.get(), model, "CPU", 6, &compiled, ov_property_key_hint_performance_mode, "LATENCY",
                                      ov_property_key_hint_inference_precision, "f32", ov_property_key_inference_num_threads,
                                      n.c_str());
        } else {
            s = ov_core_compile_model(core_.get(), model, "CPU", 4, &compiled, ov_property_key_hint_performance_mode, "LATENCY",
                                      ov_property_key_hint_inference_precision, "f32");
        }
        if (s != OK) return fail("compile", s);
        std::unique_ptr<ov_compiled_model_t, void (*)(ov_compiled_model_t *)> c(compiled, ov_compiled_model_free);
        // what the compiled half takes and gives must be what the manifest says
        ov_output_const_port_t *port = nullptr;
        ov_element_type_e type = DYNAMIC;
        std::vector<int64_t> shape;
        if ((s = ov_compiled_model_input(compiled, &port)) != OK) return fail("inspect", s);
        bool ok = port_info(port, type, shape);
        ov_output_const_port_free(port);
        if (!ok || protocol_type(type) != spec.in_dtype || shape != spec.in_shape) {
            err = path + " takes " + (ok ? std::string(tlc::dtype_name(protocol_type(type), "a type the wire protocol has no code for")) + dims(shape.data(), int64_t(shape.size()))
                                         : std::string("an input of dynamic shape")) +
                  ", its manifest says " + tlc::dtype_name(spec.in_dtype, "a type the wire protocol has no code for") + dims(spec.in_shape.data(), int64_t(spec.in_shape.size())) +
                  "; re-export the bundle";
            return nullptr;
        }
        if ((s = ov_compiled_model_output(compiled, &port)) != OK) return fail("inspect", s);
        ok = port_info(port, type, shape);
        ov_output_const_port_free(port);
        if (ok && !protocol_type(type)) {
            err = path + " gives element type " + std::to_string(int(type)) + ", which the wire protocol has no code for";
            return nullptr;
        }
        ov_infer_request_t *req = nullptr;
        if ((s = ov_compiled_model_create_infer_request(compiled, &req)) != OK) return fail("start", s);
        return std::make_unique<OpenVINOEngine>(core_, c.release(), req, spec);
    }

  private:
    Core core_;
};

}  // namespace

std::unique_ptr<Runtime> make_runtime(std::string &err) {
#ifdef TLC_ASAN
    // OpenVINO's TBB dlopens libtbbbind with RTLD_DEEPBIND, which the ASan runtime refuses (it
    // aborts the process); TBB's own switch drops the flag. Sanitizer builds only.
    setenv("TBB_ENABLE_SANITIZERS", "1", 0);
#endif
    ov_core_t *core = nullptr;
    ov_status_e s = ov_core_create(&core);
    if (s != OK) {
        err = "OpenVINO cannot start: " + ov_error(s);
        return nullptr;
    }
    return std::make_unique<OpenVINORuntime>(Core(core, ov_core_free));
}

const char *engine_name() {
    static const std::string name = [] {
        ov_version_t v;
        if (ov_get_openvino_version(&v) != OK) return std::string("openvino");
        std::string build = v.buildNumber ? v.buildNumber : "";
        ov_version_free(&v);
        return "openvino " + build.substr(0, build.find('-'));  // "2026.4.1-22982-e213a...": the release
    }();
    return name.c_str();
}

}  // namespace tlc
