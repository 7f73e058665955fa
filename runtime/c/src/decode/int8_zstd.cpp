// Encoding 5, int8+zstd: a zstd frame (zstd.cpp) whose content is the served tensor's int8 values
// (encoding 2's), restored as x = (q - zero_point) x scale.
#include "decode.hpp"

namespace tlc {

namespace {
size_t one_a_byte(size_t n) { return n; }
}  // namespace

bool decode_int8_zstd(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    size_t n = 0;
    if (!zstd_content(w, "int8+zstd", one_a_byte, -128, 127, s, n, err)) return false;
    const int8_t *q = reinterpret_cast<const int8_t *>(s.pixels.data());
    s.f32.resize(n);
    const float zp = float(w.h.zero_point);
    for (size_t i = 0; i < n; i++) s.f32[i] = (float(q[i]) - zp) * w.h.scale;
    out.data = s.f32.data();
    out.dtype = TLC_F32;
    out.shape = w.served;
    return true;
}

}  // namespace tlc
