// Encoding 2, int8 affine: a float32 tensor quantized on the device, x = (q - zero_point) x scale.
#include "decode.hpp"

namespace tlc {

bool decode_int8(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    if (w.h.dtype != TLC_I8) {
        err = misfit(w.h);
        return false;
    }
    if (!(w.h.scale > 0)) {  // NaN too
        err = misfit(w.h, " with scale <= 0");
        return false;
    }
    out.data = affine(static_cast<const int8_t *>(w.payload), w.count, w.h, s);
    out.dtype = TLC_F32;
    return true;
}

}  // namespace tlc
