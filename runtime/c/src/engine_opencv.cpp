// OpenCV's DNN module as the C edge's CPU engine (Debian's libopencv-dnn-dev, a C++ API).
// Chosen because it is packaged by Debian and loads tf2onnx exports at opset 12 (Squeeze with
// an axes attribute); ONNX Runtime, faster, ships no C headers in any package this project can
// install. Bundles for the C edge are exported with `tlcut export --opset 12`.
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

}  // namespace

class OpenCVEngine : public Engine {
  public:
    explicit OpenCVEngine(cv::dnn::Net net) : net_(std::move(net)) {}
    bool run(const void *in, int dtype, const std::vector<int> &shape, std::vector<float> &out, std::vector<int> &out_shape,
             std::string &err) override {
        if (shape.empty()) {
            err = "OpenCV DNN takes no rank-0 (scalar) input";
            return false;
        }
        size_t n = 1;
        for (int d : shape) n *= size_t(d);
        const float *x = nullptr;
        switch (dtype) {
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
        default: err = "OpenCV engine: no input of protocol dtype " + std::to_string(dtype); return false;
        }
        try {
            cv::Mat blob(int(shape.size()), shape.data(), CV_32F, const_cast<float *>(x));
            net_.setInput(blob);
            cv::Mat y = net_.forward();
            if (y.depth() != CV_32F) {
                err = "OpenCV DNN answered with a non-float32 output (depth " + std::to_string(y.depth()) + ")";
                return false;
            }
            out_shape.assign(y.size.p, y.size.p + y.dims);
            out.resize(y.total());
            cv::Mat c = y.isContinuous() ? y : y.clone();
            std::memcpy(out.data(), c.ptr<float>(), out.size() * sizeof(float));
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
    std::vector<float> scratch_;
};

std::unique_ptr<Engine> make_engine(const std::string &path, std::string &err) {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);  // failures are reported through err
    try {
        cv::dnn::Net net = cv::dnn::readNetFromONNX(path);
        if (net.empty()) {
            err = "OpenCV loaded no network from " + path;
            return nullptr;
        }
        net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
        net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
        return std::make_unique<OpenCVEngine>(std::move(net));
    } catch (const cv::Exception &e) {
        err = "OpenCV cannot load " + path + ": " + one_line(e.what()) + " (the C edge needs a bundle exported with --opset 12)";
        return nullptr;
    }
}

}  // namespace tlc
