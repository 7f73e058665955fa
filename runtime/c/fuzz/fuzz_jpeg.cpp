/* libFuzzer target: the JPEG path of the C edge (docs/protocol.md, encoding 4). fuzz_edge reaches
 * it too, but there a mutation that changes the payload's length breaks the framing first; here
 * the input is the JPEG itself and the frame is built around it, so every mutation reaches the
 * decoder.
 *
 * Each input is
 *   1. sent as a JPEG REQUEST (dims [len], scale 1/255) to the committed test bundle's whole model
 *      (input [1, 3, 7, 7], NCHW): the reply must be a RESULT (float32, the input's 7x7 image
 *      decoded) or ERROR 5 (wrong tensor: a header that does not fit, or data that does not decode),
 *      never another code, a crash or a hang;
 *   2. given to tlc::jpeg_header and, where the header parses and declares at most 256 x 256,
 *      to tlc::jpeg_decode at the declared size, which must then fill exactly h x w x c bytes or
 *      refuse. libjpeg-turbo itself is Debian's (not instrumented): the coverage is the edge's. */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "internal.hpp"
#include "tlcut.h"

#ifndef TLCUT_FUZZ_BUNDLE
#define TLCUT_FUZZ_BUNDLE "runtime/c/tests/data/bundle"
#endif

static tlc_edge *edge;
static unsigned long long results, refused, headers, decoded;
static volatile unsigned char sink;

static void report(void) {
    fprintf(stderr, "fuzz_jpeg replies: results %llu, errors 5 %llu; decoder: headers read %llu, images decoded %llu\n",
            results, refused, headers, decoded);
}

extern "C" int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *b = getenv("TLCUT_FUZZ_BUNDLE");
    if (!b) b = TLCUT_FUZZ_BUNDLE;
    int rc = tlc_edge_create(b, &edge);
    if (!rc) rc = tlc_edge_set_threads(edge, 1);
    if (!rc) rc = tlc_edge_add_cut(edge, "input", 0);
    if (rc) {
        fprintf(stderr, "fuzz_jpeg: cannot load %s: %s\n", b, edge ? tlc_edge_last_error(edge) : tlc_edge_last_error(NULL));
        abort();
    }
    if (!*tlc_jpeg()) {
        fprintf(stderr, "fuzz_jpeg: libtlcut was built without libturbojpeg; nothing to fuzz\n");
        abort();
    }
    atexit(report);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size > UINT32_MAX) return 0;
    // 1. the whole request path
    tlc_header q{};
    q.type = TLC_REQUEST;
    q.request_id = 1;
    q.cut_id = TLC_INPUT_CUT;
    q.dtype = TLC_U8;
    q.rank = 1;
    q.dims[0] = uint32_t(size);
    q.payload_len = size;
    q.encoding = TLC_ENC_JPEG;
    q.scale = 1.0f / 255;
    unsigned char hdr[TLC_HEADER_SIZE], rh[TLC_HEADER_SIZE];
    if (tlc_header_pack(&q, hdr, sizeof hdr) != TLC_OK) __builtin_trap();
    unsigned char *p = static_cast<unsigned char *>(malloc(size ? size : 1));  // a copy: ASan sees reads past it
    memcpy(p, data, size);
    const void *rp = nullptr;
    size_t rpl = 0;
    if (tlc_edge_handle_from(edge, nullptr, 0, hdr, sizeof hdr, p, size, rh, &rp, &rpl) != TLC_OK) __builtin_trap();
    tlc_header r;
    if (tlc_header_parse(rh, TLC_HEADER_SIZE, &r) != TLC_OK || r.payload_len != rpl || r.request_id != 1) __builtin_trap();
    if (r.type == TLC_RESULT) {
        if (r.dtype != TLC_F32 || !rpl || tlc_frame_check(&r, rpl) != TLC_OK) __builtin_trap();
        results++;
    } else if (r.type == TLC_ERROR && r.status == TLC_E_WRONG_TENSOR && rpl && rpl <= TLC_MAX_ERROR_TEXT) {
        refused++;
    } else {
        __builtin_trap();  // a JPEG is answered with a result or "wrong tensor", nothing else
    }
    unsigned char acc = 0;
    for (size_t i = 0; i < rpl; i++) acc ^= static_cast<const unsigned char *>(rp)[i];
    // 2. the decoder at the size the header declares
    int h = 0, w = 0, c = 0;
    std::string err;
    if (tlc::jpeg_header(p, size, &h, &w, &c, err)) {
        headers++;
        if (h < 1 || w < 1 || h > 65535 || w > 65535 || c < 1 || c > 4) __builtin_trap();
        std::vector<uint8_t> out;
        if (size_t(h) * size_t(w) <= 256 * 256 && tlc::jpeg_decode(p, size, h, w, c, out, err)) {
            if (out.size() != size_t(h) * size_t(w) * size_t(c)) __builtin_trap();
            for (uint8_t v : out) acc ^= v;
            decoded++;
        }
        if (err.find('\n') != std::string::npos) __builtin_trap();  // one-line messages
    }
    sink = acc;
    free(p);
    return 0;
}
