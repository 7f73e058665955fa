// OpenCV's DNN module as the C edge's CPU engine (Debian's libopencv-dnn-dev, a C++ API).
// Chosen because it is packaged by Debian and loads tf2onnx exports at opset 12 (Squeeze with
// an axes attribute); ONNX Runtime, faster, ships no C headers in any package this project can
// install. Bundles for the C edge are exported with `tlcut export --opset 12`.
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include <cstring>

#include "engine.hpp"

namespace tlc {

class OpenCVEngine : public Engine {
  public:
    explicit OpenCVEngine(cv::dnn::Net net) : net_(std::move(net)) {}
    bool run(const float *in, const std::vector<int> &shape, std::vector<float> &out, std::vector<int> &out_shape,
             std::string &err) override {
        try {
            cv::Mat blob(int(shape.size()), shape.data(), CV_32F, const_cast<float *>(in));
            net_.setInput(blob);
            cv::Mat y = net_.forward();
            out_shape.assign(y.size.p, y.size.p + y.dims);
            out.resize(y.total());
            cv::Mat c = y.isContinuous() ? y : y.clone();
            std::memcpy(out.data(), c.ptr<float>(), out.size() * sizeof(float));
            return true;
        } catch (const cv::Exception &e) {
            err = e.what();
            return false;
        }
    }

  private:
    cv::dnn::Net net_;
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
        std::string w = e.what();
        auto nl = w.find("error:");
        err = "OpenCV cannot load " + path + ": " + (nl == std::string::npos ? w : w.substr(nl)) +
              " (the C edge needs a bundle exported with --opset 12)";
        while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
        for (auto &ch : err)
            if (ch == '\n') ch = ' ';
        return nullptr;
    }
}

}  // namespace tlc
