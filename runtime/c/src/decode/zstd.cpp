// What the zstd encodings (5 int8+zstd, 6 int4+zstd) share: one zstd frame, sent as uint8 dims
// [payload_len], whose content is the served tensor's values packed as the encoding says. The
// served input says how many bytes that is; the frame must declare exactly that content size
// before anything is allocated or decompressed (a bomb declaring gigabytes, or no size, costs
// nothing), and it is decompressed into a buffer of that size and no more (a frame that lies about
// its size fails there). Built without libzstd, every such request is refused, saying so.
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
        err = "the zstd frame declares " + std::to_string(declared) + " bytes; the tensor served takes " + std::to_string(n);
        return false;
    }
    size_t frame = ZSTD_findFrameCompressedSize(src, len);
    if (ZSTD_isError(frame)) {
        err = std::string("the zstd frame does not decode: ") + ZSTD_getErrorName(frame);
        return false;
    }
    if (frame != len) {
        err = "the zstd frame does not decode: " + std::to_string(len - frame) + " bytes follow it";
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

bool zstd_content(const Wire &w, const char *name, size_t (*content_bytes)(size_t), int lo, int hi, Scratch &s, size_t &n,
                  std::string &err) {
    const tlc_header &h = w.h;
    if (h.dtype != TLC_U8) {
        err = misfit(h);
        return false;
    }
    if (h.rank != 1) {
        std::vector<int64_t> dims(h.dims, h.dims + h.rank);
        err = misfit(h, " with dims " + dims_str(dims) + "; a zstd frame is sent as dims [payload_len]");
        return false;
    }
    if (!scale_ok(h, lo, hi, err)) return false;
    n = w.served.empty() ? 0 : 1;
    for (int64_t d : w.served) {
        if (d < 1 || size_t(d) > std::numeric_limits<size_t>::max() / n) {
            n = 0;
            break;
        }
        n *= size_t(d);
    }
    if (n == 0) {
        err = std::string(name) + " needs the served input's fixed shape, got " + dims_str(w.served) + "; send int8";
        return false;
    }
#ifndef TLCUT_HAVE_ZSTD
    (void)s, (void)content_bytes;
    err = "this edge was built without zstd support; rebuild it with libzstd (Debian: libzstd-dev)";
    return false;
#else
    return unzstd(w.payload, w.len, content_bytes(n), s.pixels, err);  // s.pixels: the edge's byte scratch
#endif
}

}  // namespace tlc
