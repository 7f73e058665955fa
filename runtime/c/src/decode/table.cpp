// The one table of wire encodings the C edge decodes, keyed by the protocol's code (tlcut.h
// TLC_ENC_*, docs/protocol.md). A new encoding: its decode function in a file of its own, one row here.
#include "decode.hpp"

#include "internal.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace tlc {

namespace {
const Encoding kTable[] = {
    {TLC_ENC_RAW, "raw", decode_raw},
    {TLC_ENC_FLOAT16, "float16", decode_float16},
    {TLC_ENC_INT8, "int8", decode_int8},
    {TLC_ENC_UINT8, "uint8", decode_uint8},
    {TLC_ENC_JPEG, "jpeg", decode_jpeg},
    {TLC_ENC_INT8_ZSTD, "int8+zstd", decode_int8_zstd},
    {TLC_ENC_INT4_ZSTD, "int4+zstd", decode_int4_zstd},
};
}  // namespace

const Encoding *find_encoding(uint8_t code) {
    for (const Encoding &e : kTable)
        if (e.code == code) return &e;
    return nullptr;
}

const Encoding *encodings(size_t *count) {
    *count = sizeof kTable / sizeof kTable[0];
    return kTable;
}

std::string misfit(const tlc_header &h, const std::string &why) {
    return "encoding " + std::to_string(h.encoding) + " does not fit a " + dtype_name(h.dtype) + " payload" + why;
}

bool scale_ok(const tlc_header &h, int lo, int hi, std::string &err) {
    if (std::isnan(h.scale) || std::isinf(h.scale)) {  // NaN compares false either way: test it first
        err = misfit(h, std::string(" with scale ") + (std::isnan(h.scale) ? "nan" : h.scale > 0 ? "inf" : "-inf") +
                            " (not finite)");
        return false;
    }
    if (!(h.scale > 0)) {
        err = misfit(h, " with scale <= 0");
        return false;
    }
    // in double, as the Python edge computes it: a zero point far from the levels makes the product
    // overflow float32 even with a finite scale
    const double zp = h.zero_point, top = std::max(std::fabs(lo - zp), std::fabs(hi - zp)) * double(h.scale);
    if (top > kRestoreLimit) {
        char buf[160];
        std::snprintf(buf, sizeof buf, " with scale %g and zero point %d: it restores to %g, past float32's range",
                      double(h.scale), int(h.zero_point), top);
        err = misfit(h, buf);
        return false;
    }
    return true;
}

bool decode(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    const Encoding *e = find_encoding(w.h.encoding);
    if (!e) {
        err = misfit(w.h);
        return false;
    }
    return e->decode(w, s, out, err);
}

}  // namespace tlc
