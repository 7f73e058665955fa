// Encoding 2, int8 affine: a float32 tensor quantized on the device, x = (q - zero_point) x scale.
#include "decode.hpp"

namespace tlc {

bool decode_int8(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    return decode_affine<int8_t>(w, TLC_I8, s, out, err);
}

}  // namespace tlc
