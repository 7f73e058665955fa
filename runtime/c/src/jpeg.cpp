// JPEG for the wire's encoding 4 (docs/protocol.md), with libjpeg-turbo's TurboJPEG API: the
// header is read first, so a hostile one (65535 x 65535) costs nothing; only an image of the
// served size is decoded, into a buffer sized for it. Built without libturbojpeg, every JPEG is
// refused with a message that says so.
#include <climits>
#include <string>
#include <vector>

#include "internal.hpp"

#ifdef TLCUT_HAVE_TURBOJPEG
#include <turbojpeg.h>
#endif

namespace tlc {

namespace {
#ifndef TLCUT_HAVE_TURBOJPEG
const char *kNoJpeg = "this edge was built without JPEG support; rebuild it with libturbojpeg (Debian: libturbojpeg0-dev)";
#else
// One decompressor per call, destroyed on every path.
struct Decompressor {
    tjhandle t = tjInitDecompress();
    ~Decompressor() {
        if (t) tjDestroy(t);
    }
};

std::string first_line(const char *s) {
    std::string m = s ? s : "unknown error";
    size_t nl = m.find('\n');
    return (nl == std::string::npos ? m : m.substr(0, nl)).substr(0, 300);
}

bool header(tjhandle t, const void *data, size_t len, int *h, int *w, int *c, std::string &err) {
    int sub = -1, cs = -1;
    *h = *w = *c = 0;  // a stream of tables only "succeeds" in libjpeg-turbo 2.1 without writing them
    if (len > ULONG_MAX ||
        tjDecompressHeader3(t, static_cast<const unsigned char *>(data), (unsigned long)len, w, h, &sub, &cs) != 0) {
        err = "not a JPEG header this edge can read: " + first_line(tjGetErrorStr2(t));
        return false;
    }
    if (*h < 1 || *w < 1) {
        err = "not a JPEG header this edge can read: it declares no image (no frame header)";
        return false;
    }
    *c = cs == TJCS_GRAY ? 1 : (cs == TJCS_RGB || cs == TJCS_YCbCr) ? 3 : 4;
    return true;
}
#endif
}  // namespace

const char *jpeg_decoder() {
#ifdef TLCUT_HAVE_TURBOJPEG
    return "libjpeg-turbo " TLCUT_TURBOJPEG_VERSION;
#else
    return "";
#endif
}

bool jpeg_header(const void *data, size_t len, int *h, int *w, int *c, std::string &err) {
#ifdef TLCUT_HAVE_TURBOJPEG
    Decompressor d;
    if (!d.t) {
        err = "the JPEG decoder did not start: " + first_line(tjGetErrorStr2(nullptr));
        return false;
    }
    return header(d.t, data, len, h, w, c, err);
#else
    (void)data, (void)len, (void)h, (void)w, (void)c;
    err = kNoJpeg;
    return false;
#endif
}

bool jpeg_decode(const void *data, size_t len, int h, int w, int c, std::vector<uint8_t> &out, std::string &err) {
#ifdef TLCUT_HAVE_TURBOJPEG
    Decompressor d;
    if (!d.t) {
        err = "the JPEG decoder did not start: " + first_line(tjGetErrorStr2(nullptr));
        return false;
    }
    int jh = 0, jw = 0, jc = 0;
    if (!header(d.t, data, len, &jh, &jw, &jc, err)) return false;
    if (jh != h || jw != w || jc != c) {
        err = "the JPEG decodes to " + std::to_string(jh) + "x" + std::to_string(jw) + " with " + std::to_string(jc) +
              " component(s); the input served takes " + std::to_string(h) + "x" + std::to_string(w) + " with " +
              std::to_string(c) + ": resize the image before encoding it";
        return false;
    }
    if (c != 1 && c != 3) {
        err = "the JPEG has " + std::to_string(c) + " components; send grayscale or RGB";
        return false;
    }
    out.resize(size_t(h) * size_t(w) * size_t(c));
    int flags = 0;
#ifdef TJFLAG_LIMITSCANS
    flags |= TJFLAG_LIMITSCANS;  // a progressive JPEG of thousands of scans would take minutes
#endif
    // a libjpeg warning (truncated data, extraneous bytes) fails the call too: the image is incomplete
    if (tjDecompress2(d.t, static_cast<const unsigned char *>(data), (unsigned long)len, out.data(), w, 0, h,
                      c == 1 ? TJPF_GRAY : TJPF_RGB, flags) != 0) {
        err = "the JPEG does not decode: " + first_line(tjGetErrorStr2(d.t));
        return false;
    }
    return true;
#else
    (void)data, (void)len, (void)h, (void)w, (void)c, (void)out;
    err = kNoJpeg;
    return false;
#endif
}

}  // namespace tlc
