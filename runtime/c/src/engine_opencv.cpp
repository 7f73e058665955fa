// OpenCV's DNN module as the C edge's CPU engine (Debian's libopencv-dnn-dev, a C++ API): the
// engine for a box that has Debian packages only (no pip). OpenCV 4.6 reads ONNX up to about opset
// 12 (Squeeze with an axes attribute), so bundles for it are exported with `--opset 12`; it
// computes in float32 only, and is about 2x slower than OpenVINO on DenseNet tails.
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine.hpp"
#include "tlcut.h"

namespace tlc {

namespace {

// OpenCV DNN computes in float32 and converts whatever it is given to float32 on input (its ONNX
// importer turns a Cast to float into an identity). So every protocol dtype is widened to
// float32 here, which is exact for (u)int8 and float16; integers are exact only up to 2^24, and
// beyond that the request is refused rather than answered with a silently different input.
constexpr double kExactInt = 16777216.0;  // 2^24

template <typename T>
bool widen_int(const void *in, size_t n, std::vector<float> &dst, const char *name, std::string &err) {
    dst.resize(n);
    for (size_t i = 0; i < n; i++) {
        T v;
        std::memcpy(&v, static_cast<const unsigned char *>(in) + i * sizeof(T), sizeof(T));
        if (std::fabs(double(v)) > kExactInt) {
            err = std::string("OpenCV DNN computes in float32, and the ") + name + " input value " + std::to_string(v) +
                  " at element " + std::to_string(i) + " has no exact float32 form (|x| > 2^24)";
            return false;
        }
        dst[i] = float(v);
    }
    return true;
}

std::string one_line(const std::string &w) {
    auto at = w.find("error:");
    std::string s = at == std::string::npos ? w : w.substr(at);
    for (auto &ch : s)
        if (ch == '\n' || ch == '\r') ch = ' ';
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s.substr(0, 300);
}

// OpenCV answers in float32; the reply carries the model's own output dtype, as the Python edge's
// does, so the result is converted to it (exact for every integer OpenCV's float32 holds).
bool narrow(const cv::Mat &y, int dtype, cv::Mat &dst, std::vector<int64_t> &wide, std::string &err) {
    switch (dtype) {
    case TLC_F32: dst = y; return true;
    case TLC_F16: y.convertTo(dst, CV_16F); return true;
    case TLC_F64: y.convertTo(dst, CV_64F); return true;
    case TLC_I32: y.convertTo(dst, CV_32S); return true;
    case TLC_I8: y.convertTo(dst, CV_8S); return true;
    case TLC_U8: y.convertTo(dst, CV_8U); return true;
    case TLC_I64: {
        const float *p = y.ptr<float>();
        wide.resize(y.total());
        for (size_t i = 0; i < wide.size(); i++) {
            if (!(std::fabs(p[i]) < 9.2e18f)) {
                err = "OpenCV's float32 result " + std::to_string(p[i]) + " has no int64 form";
                return false;
            }
            wide[i] = std::llround(p[i]);
        }
        return true;
    }
    default: err = "OpenCV engine: no output of protocol dtype " + std::to_string(dtype); return false;
    }
}

}  // namespace

class OpenCVEngine : public Engine {
  public:
    OpenCVEngine(cv::dnn::Net net, const Spec &spec) : net_(std::move(net)), spec_(spec) {
        for (int64_t d : spec.in_shape) shape_.push_back(int(d));
    }
    bool run(const void *in, Output &out, std::string &err) override {
        if (shape_.empty()) {
            err = "OpenCV DNN takes no rank-0 (scalar) input";
            return false;
        }
        size_t n = 1;
        for (int d : shape_) n *= size_t(d);
        const float *x = nullptr;
        switch (spec_.in_dtype) {
        case TLC_F32: x = static_cast<const float *>(in); break;
        case TLC_U8: widen(static_cast<const uint8_t *>(in), n); x = scratch_.data(); break;
        case TLC_I8: widen(static_cast<const int8_t *>(in), n); x = scratch_.data(); break;
        case TLC_F16: {
            cv::Mat h(1, int(n), CV_16F, const_cast<void *>(in)), f;
            h.convertTo(f, CV_32F);
            scratch_.assign(f.ptr<float>(), f.ptr<float>() + n);
            x = scratch_.data();
            break;
        }
        case TLC_F64:  // out-of-range doubles become +-inf explicitly: a plain conversion of them is undefined
            scratch_.resize(n);
            for (size_t i = 0; i < n; i++) {
                double v = static_cast<const double *>(in)[i];
                scratch_[i] = std::fabs(v) <= double(FLT_MAX) || std::isnan(v) ? float(v) : v > 0 ? INFINITY : -INFINITY;
            }
            x = scratch_.data();
            break;
        case TLC_I32:
            if (!widen_int<int32_t>(in, n, scratch_, "int32", err)) return false;
            x = scratch_.data();
            break;
        case TLC_I64:
            if (!widen_int<int64_t>(in, n, scratch_, "int64", err)) return false;
            x = scratch_.data();
            break;
        default: err = "OpenCV engine: no input of protocol dtype " + std::to_string(spec_.in_dtype); return false;
        }
        try {
            cv::Mat blob(int(shape_.size()), shape_.data(), CV_32F, const_cast<float *>(x));
            net_.setInput(blob);
            cv::Mat y = net_.forward();
            if (y.depth() != CV_32F) {
                err = "OpenCV DNN answered with a non-float32 output (depth " + std::to_string(y.depth()) + ")";
                return false;
            }
            if (!y.isContinuous()) y = y.clone();
            out.shape.assign(y.size.p, y.size.p + y.dims);
            if (!narrow(y, spec_.out_dtype, result_, wide_, err)) return false;
            out.dtype = spec_.out_dtype;
            out.data = spec_.out_dtype == TLC_I64 ? static_cast<const void *>(wide_.data()) : result_.ptr();
            out.bytes = y.total() * tlc_dtype_size(spec_.out_dtype);
            return true;
        } catch (const cv::Exception &e) {
            err = one_line(e.what());
            return false;
        }
    }

  private:
    template <typename T>
    void widen(const T *p, size_t n) {
        scratch_.resize(n);
        for (size_t i = 0; i < n; i++) scratch_[i] = float(p[i]);
    }

    cv::dnn::Net net_;
    Spec spec_;
    std::vector<int> shape_;
    std::vector<float> scratch_;
    cv::Mat result_;              // the last result, in the model's output dtype
    std::vector<int64_t> wide_;   // the same for an int64 output
};

class OpenCVRuntime : public Runtime {
  public:
    std::unique_ptr<Engine> load(const std::string &path, const Spec &spec, const Options &opt, std::string &err) override {
        if (opt.threads > 0) cv::setNumThreads(opt.threads);  // process-wide in OpenCV: the last half loaded sets it
        try {
            cv::dnn::Net net = cv::dnn::readNetFromONNX(path);
            if (net.empty()) {
                err = "OpenCV loaded no network from " + path;
                return nullptr;
            }
            net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
            net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
            return std::make_unique<OpenCVEngine>(std::move(net), spec);
        } catch (const cv::Exception &e) {
            err = "OpenCV cannot load " + path + ": " + one_line(e.what()) +
                  " (OpenCV 4.6 reads ONNX up to opset 12, and not every operator: export with --opset 12, or build the C edge with "
                  "OpenVINO)";
            return nullptr;
        }
    }
};

std::unique_ptr<Runtime> make_runtime(std::string &) {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);  // failures are reported through err
    return std::make_unique<OpenCVRuntime>();
}

const char *engine_name() { return "opencv " CV_VERSION; }

}  // namespace tlc
