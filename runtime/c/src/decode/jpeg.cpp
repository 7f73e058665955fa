// Encoding 4, jpeg: a JPEG file as uint8 dims [payload_len]. The served input says the image's
// size and layout; the JPEG's header is checked against it before anything is decoded (../jpeg.cpp),
// then the pixels are restored as encoding 3 and, for an NCHW input, transposed.
#include "decode.hpp"
#include "internal.hpp"

namespace tlc {

bool decode_jpeg(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    const tlc_header &h = w.h;
    if (h.dtype != TLC_U8) {
        err = misfit(h);
        return false;
    }
    if (h.rank != 1) {
        err = misfit(h, " with dims " + dims_str(out.shape) + "; a JPEG is sent as dims [payload_len]");
        return false;
    }
    if (!scale_ok(h, 0, 255, err)) return false;
    const std::vector<int64_t> &sv = w.served;
    bool nhwc = sv.size() == 4 && sv[0] == 1 && (sv[3] == 1 || sv[3] == 3);
    bool nchw = !nhwc && sv.size() == 4 && sv[0] == 1 && (sv[1] == 1 || sv[1] == 3);
    int64_t ih = nhwc ? sv[1] : nchw ? sv[2] : 0, iw = nhwc ? sv[2] : nchw ? sv[3] : 0, ic = nhwc ? sv[3] : nchw ? sv[1] : 0;
    if (!(nhwc || nchw) || ih < 1 || iw < 1 || ih > 65535 || iw > 65535) {
        err = "jpeg does not fit this input " + dims_str(sv) + ": it takes a rank-4 batch-1 image with 1 or 3 "
              "channels (NHWC or NCHW); send it raw";
        return false;
    }
    if (!jpeg_decode(w.payload, w.len, int(ih), int(iw), int(ic), s.pixels, err)) return false;
    size_t hw = size_t(ih) * size_t(iw), c = size_t(ic);
    s.f32.resize(hw * c);
    const uint8_t *p = s.pixels.data();  // HWC
    const float zp = float(h.zero_point);
    for (size_t i = 0; i < hw; i++)
        for (size_t k = 0; k < c; k++) s.f32[nhwc ? i * c + k : k * hw + i] = (float(p[i * c + k]) - zp) * h.scale;
    out.data = s.f32.data();
    out.dtype = TLC_F32;
    out.shape = sv;
    return true;
}

}  // namespace tlc
