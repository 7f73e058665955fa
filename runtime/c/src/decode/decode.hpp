// Wire encodings (docs/protocol.md, the header's encoding byte): one decode function per encoding,
// each in its own file here, behind one table (table.cpp) keyed by the protocol's code. The codes
// themselves are tlcut.h's TLC_ENC_*. A new encoding is one function and one row of the table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tlcut.h"

namespace tlc {

// A request's tensor as it came off the wire; tlc_frame_check has passed, so ``count`` elements
// of the header's dtype fill ``len`` bytes exactly.
struct Wire {
    const tlc_header &h;
    const void *payload;                  // never NULL (an empty frame gets a dummy address)
    size_t len;
    size_t count;                         // product of the header's dims
    const std::vector<int64_t> &served;  // the input shape of the half the request goes to
};

// What the half runs on. Decoding starts from the wire's own data, dtype and dims; a decoder
// changes what it restores (float16 and the affine encodings give float32, jpeg also the shape).
struct Tensor {
    const void *data;
    int dtype;
    std::vector<int64_t> shape;
};

// Memory decoders write to, kept by the edge between requests so that a steady stream allocates nothing.
struct Scratch {
    std::vector<float> f32;          // a restored payload
    std::vector<uint8_t> pixels;     // a decoded JPEG (HWC), before the affine restore
    std::vector<uint64_t> aligned;   // a raw payload copied to 8-byte alignment
};

// Restore ``w`` into ``out``; false and the ERROR wrong-tensor message in ``err`` if it does not
// fit the encoding or does not decode.
using DecodeFn = bool (*)(const Wire &w, Scratch &s, Tensor &out, std::string &err);

struct Encoding {
    uint8_t code;  // TLC_ENC_*
    const char *name;  // as docs/protocol.md names it
    DecodeFn decode;
};

bool decode_raw(const Wire &w, Scratch &s, Tensor &out, std::string &err);
bool decode_float16(const Wire &w, Scratch &s, Tensor &out, std::string &err);
bool decode_int8(const Wire &w, Scratch &s, Tensor &out, std::string &err);
bool decode_uint8(const Wire &w, Scratch &s, Tensor &out, std::string &err);
bool decode_jpeg(const Wire &w, Scratch &s, Tensor &out, std::string &err);
bool decode_int8_zstd(const Wire &w, Scratch &s, Tensor &out, std::string &err);
bool decode_int4_zstd(const Wire &w, Scratch &s, Tensor &out, std::string &err);

// The zstd decoder libtlcut was built with (encodings 5 and 6), e.g. "libzstd 1.5.4", or "" for none.
const char *zstd_decoder();
// What the zstd encodings share (zstd.cpp): the header (dtype uint8, rank 1, a finite scale > 0), the served
// input's element count in ``n``, and one zstd frame of exactly ``content_bytes(n)`` bytes,
// decompressed into s.pixels; false and the ERROR wrong-tensor message otherwise.
bool zstd_content(const Wire &w, const char *name, size_t (*content_bytes)(size_t), int lo, int hi, Scratch &s, size_t &n,
                  std::string &err);

// The table's row for ``code``, or nullptr for a code this edge does not know.
const Encoding *find_encoding(uint8_t code);
// The rows, in code order (for tests).
const Encoding *encodings(size_t *count);

// Decode by the header's encoding: its row's function, or for an unknown code the misfit message.
bool decode(const Wire &w, Scratch &s, Tensor &out, std::string &err);

// "encoding E does not fit a DTYPE payload" + ``why``: the message of every encoding's refusal.
std::string misfit(const tlc_header &h, const std::string &why = "");

// The largest |(q - zero_point) x scale| restored: float32's range less a margin for its rounding
// (tlcut/encodings/base.py RESTORE_LIMIT).
constexpr double kRestoreLimit = 3e38;

// An affine scale is finite and > 0, and with the zero point keeps q in lo..hi within
// kRestoreLimit (inf or NaN would come out otherwise); else the misfit message in ``err``, as the
// Python edge words it.
bool scale_ok(const tlc_header &h, int lo, int hi, std::string &err);

// The affine encodings (int8, uint8): a payload of ``dtype`` (integers of type Q) with scale > 0,
// restored to float32 x = (q - zero_point) x scale in s.f32.
template <typename Q>
bool decode_affine(const Wire &w, int dtype, Scratch &s, Tensor &out, std::string &err) {
    if (w.h.dtype != dtype) {
        err = misfit(w.h);
        return false;
    }
    if (!scale_ok(w.h, std::numeric_limits<Q>::min(), std::numeric_limits<Q>::max(), err)) return false;
    const Q *q = static_cast<const Q *>(w.payload);
    s.f32.resize(w.count);
    for (size_t i = 0; i < w.count; i++) s.f32[i] = (float(q[i]) - float(w.h.zero_point)) * w.h.scale;
    out.data = s.f32.data();
    out.dtype = TLC_F32;
    return true;
}

}  // namespace tlc
