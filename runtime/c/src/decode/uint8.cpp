// Encoding 3, uint8: the input's raw pixels in its own layout, restored with the input's pixel
// mapping as encoding 2 (docs/protocol.md, "Pixel encodings").
#include "decode.hpp"

namespace tlc {

bool decode_uint8(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    if (w.h.dtype != TLC_U8) {
        err = misfit(w.h);
        return false;
    }
    if (!(w.h.scale > 0)) {  // NaN too
        err = misfit(w.h, " with scale <= 0");
        return false;
    }
    out.data = affine(static_cast<const uint8_t *>(w.payload), w.count, w.h, s);
    out.dtype = TLC_F32;
    return true;
}

}  // namespace tlc
