// Encoding 3, uint8: the input's raw pixels in its own layout, restored with the input's pixel
// mapping as encoding 2 (docs/protocol.md, "Pixel encodings").
#include "decode.hpp"

namespace tlc {

bool decode_uint8(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    return decode_affine<uint8_t>(w, TLC_U8, s, out, err);
}

}  // namespace tlc
