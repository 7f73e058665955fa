// Encoding 5, int8+zstd: one zstd frame, sent as uint8 dims [payload_len], whose content is the
// served tensor's int8 values (encoding 2's), restored as x = (q - zero_point) x scale. The served
// input says how many values; the frame must declare exactly that content size before anything is
// allocated or decompressed (a bomb declaring gigabytes, or no size, costs nothing), and it is
// decompressed into a buffer of that size and no more (a frame that lies about its size fails
// there). Built without libzstd, every such request is refused with a message that says so.
#include <limits>
#include <memory>

#include "decode.hpp"
#include "internal.hpp"

#ifdef TLCUT_HAVE_ZSTD
#include <zstd.h>
#endif

namespace tlc {

const char *zstd_decoder() {
#ifdef TLCUT_HAVE_ZSTD
    static const std::string v = std::string("libzstd ") + ZSTD_versionString();
    return v.c_str();
#else
    return "";
#endif
}

namespace {
#ifdef TLCUT_HAVE_ZSTD
struct FreeDctx {
    void operator()(ZSTD_DCtx *d) const { ZSTD_freeDCtx(d); }
};

// One decompression context per serving thread, kept between requests (a steady stream allocates nothing).
ZSTD_DCtx *dctx() {
    thread_local std::unique_ptr<ZSTD_DCtx, FreeDctx> d(ZSTD_createDCtx());
    return d.get();
}

// The frame's content, exactly ``n`` bytes, into ``dst`` (resized to ``n`` only once the header agrees).
bool unzstd(const void *src, size_t len, size_t n, std::vector<uint8_t> &dst, std::string &err) {
    unsigned long long declared = ZSTD_getFrameContentSize(src, len);
    if (declared == ZSTD_CONTENTSIZE_ERROR) {
        err = "not a zstd frame this edge can read: its header does not parse";
        return false;
    }
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN) {
        err = "the zstd frame does not declare its content size; the device must write it";
        return false;
    }
    if (declared != n) {
        err = "the zstd frame declares " + std::to_string(declared) + " bytes; the tensor served takes " +
              std::to_string(n) + " int8 values";
        return false;
    }
    size_t frame = ZSTD_findFrameCompressedSize(src, len);
    if (ZSTD_isError(frame)) {
        err = std::string("the zstd frame does not decode: ") + ZSTD_getErrorName(frame);
        return false;
    }
    if (frame != len) {
        err = "the payload has " + std::to_string(len - frame) + " bytes after its zstd frame";
        return false;
    }
    ZSTD_DCtx *d = dctx();
    if (!d) {
        err = "the zstd frame does not decode: no memory for a decompression context";
        return false;
    }
    dst.resize(n);
    size_t got = ZSTD_decompressDCtx(d, dst.data(), n, src, len);
    if (ZSTD_isError(got)) {
        err = std::string("the zstd frame does not decode: ") + ZSTD_getErrorName(got);
        return false;
    }
    if (got != n) {
        err = "the zstd frame decodes to " + std::to_string(got) + " bytes; the tensor served takes " + std::to_string(n);
        return false;
    }
    return true;
}
#endif
}  // namespace

bool decode_int8_zstd(const Wire &w, Scratch &s, Tensor &out, std::string &err) {
    const tlc_header &h = w.h;
    if (h.dtype != TLC_U8) {
        err = misfit(h);
        return false;
    }
    if (h.rank != 1) {
        err = misfit(h, " with dims " + dims_str(out.shape) + "; a zstd frame is sent as dims [payload_len]");
        return false;
    }
    if (!(h.scale > 0)) {  // NaN too
        err = misfit(h, " with scale <= 0");
        return false;
    }
    size_t n = w.served.empty() ? 0 : 1;
    for (int64_t d : w.served) {
        if (d < 1 || size_t(d) > std::numeric_limits<size_t>::max() / n) {
            n = 0;
            break;
        }
        n *= size_t(d);
    }
    if (n == 0) {
        err = "int8+zstd needs the served input's fixed shape, got " + dims_str(w.served) + "; send int8";
        return false;
    }
#ifndef TLCUT_HAVE_ZSTD
    (void)s;
    err = "this edge was built without zstd support; rebuild it with libzstd (Debian: libzstd-dev)";
    return false;
#else
    if (!unzstd(w.payload, w.len, n, s.pixels, err)) return false;  // s.pixels: the edge's byte scratch
    const int8_t *q = reinterpret_cast<const int8_t *>(s.pixels.data());
    s.f32.resize(n);
    const float zp = float(h.zero_point);
    for (size_t i = 0; i < n; i++) s.f32[i] = (float(q[i]) - zp) * h.scale;
    out.data = s.f32.data();
    out.dtype = TLC_F32;
    out.shape = w.served;
    return true;
#endif
}

}  // namespace tlc
