// Encoding 6, int4+zstd: a zstd frame (zstd.cpp) whose content is the served tensor's values q in
// 0..15, two a byte (element 2i in byte i's low nibble, 2i+1 in its high one), restored as
// x = (q - zero_point) x scale.
#include "decode.hpp"

namespace tlc {

namespace {
size_t two_a_byte(size_t n) { return n / 2 + n % 2; }
}  // namespace

bool decode_int4_zstd(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    size_t n = 0;
    if (!zstd_content(w, "int4+zstd", two_a_byte, 0, 15, s, n, err)) return false;
    const uint8_t *b = s.pixels.data();
    s.f32.resize(n);
    const float zp = float(w.h.zero_point);
    for (size_t i = 0; i < n; i++) s.f32[i] = (float((b[i / 2] >> (4 * (i % 2))) & 0x0F) - zp) * w.h.scale;
    out.data = s.f32.data();
    out.dtype = TLC_F32;
    out.shape = w.served;
    return true;
}

}  // namespace tlc
