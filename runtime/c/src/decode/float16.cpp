// Encoding 1, float16: a float32 tensor sent as IEEE half floats (dtype float16), widened back.
#include <cstring>

#include "decode.hpp"

namespace tlc {

namespace {
float half_to_float(uint16_t h) {
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, f;
    if (exp == 0) {
        if (man == 0) {
            f = sign;
        } else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) { man <<= 1; exp--; }
            f = sign | exp << 23 | (man & 0x3ffu) << 13;
        }
    } else if (exp == 31) {
        f = sign | 0x7f800000u | man << 13;
    } else {
        f = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}
}  // namespace

bool decode_float16(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    if (w.h.dtype != TLC_F16) {
        err = misfit(w.h);
        return false;
    }
    s.f32.resize(w.count);
    const unsigned char *p = static_cast<const unsigned char *>(w.payload);  // little-endian, maybe unaligned
    for (size_t i = 0; i < w.count; i++) s.f32[i] = half_to_float(uint16_t(p[2 * i] | p[2 * i + 1] << 8));
    out.data = s.f32.data();
    out.dtype = TLC_F32;
    return true;
}

}  // namespace tlc
