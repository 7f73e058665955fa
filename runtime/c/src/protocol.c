/* The wire protocol's framing (docs/protocol.md): parse, pack and check headers. No allocation. */
#include <string.h>

#include "tlcut.h"

static const unsigned char MAGIC[4] = {'T', 'L', 'C', 'T'};

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *p, uint64_t v) {
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

const char *tlc_version(void) { return TLC_VERSION_STRING; }

const char *tlc_strerror(int s) {
    switch (s) {
    case TLC_OK: return "ok";
    case TLC_E_BAD_FRAME: return "bad frame";
    case TLC_E_VERSION: return "unsupported version";
    case TLC_E_BAD_TYPE: return "bad message type";
    case TLC_E_WRONG_CUT: return "wrong cut";
    case TLC_E_WRONG_TENSOR: return "wrong tensor";
    case TLC_E_TOO_LARGE: return "message too large";
    case TLC_E_INTERNAL: return "internal error";
    case TLC_E_BUSY: return "busy";
    case TLC_E_REPLAY: return "replayed request";
    case TLC_E_UPSTREAM: return "upstream unavailable";
    case TLC_E_INVALID_ARGUMENT: return "invalid argument";
    case TLC_E_NOT_FOUND: return "not found";
    case TLC_E_ENGINE: return "engine error";
    case TLC_E_TRANSPORT: return "transport error";
    case TLC_E_NO_MEMORY: return "out of memory";
    case TLC_E_BUNDLE: return "bad bundle";
    case TLC_E_INSECURE: return "plain TCP refused outside loopback";
    default: return "unknown status";
    }
}

size_t tlc_dtype_size(int dtype) {
    switch (dtype) {
    case TLC_F32: case TLC_I32: return 4;
    case TLC_F16: return 2;
    case TLC_I8: case TLC_U8: return 1;
    case TLC_I64: case TLC_F64: return 8;
    default: return 0;
    }
}

int tlc_header_parse(const void *buf, size_t len, tlc_header *h) {
    if (!buf || !h) return TLC_E_INVALID_ARGUMENT;
    if (len != TLC_HEADER_SIZE) return TLC_E_BAD_FRAME;
    const unsigned char *p = (const unsigned char *)buf;
    if (memcmp(p, MAGIC, 4) != 0) return TLC_E_BAD_FRAME;
    memset(h, 0, sizeof *h);
    h->version = p[4];
    h->type = p[5];
    h->dtype = p[6];
    h->rank = p[7];
    if (h->version != TLC_PROTOCOL_VERSION) return TLC_E_VERSION;
    if (h->type < TLC_REQUEST || h->type > TLC_PONG) return TLC_E_BAD_TYPE;
    if (h->rank > TLC_MAX_RANK) return TLC_E_BAD_FRAME;
    if (h->dtype && !tlc_dtype_size(h->dtype)) return TLC_E_WRONG_TENSOR;
    h->request_id = rd64(p + 8);
    h->cut_id = rd32(p + 16);
    h->flags = rd16(p + 20);
    h->encoding = p[22];
    h->status = p[23];
    h->payload_len = rd64(p + 24);
    uint32_t s = rd32(p + 32);
    memcpy(&h->scale, &s, 4);
    h->zero_point = (int32_t)rd32(p + 36);
    h->server_us = rd32(p + 40);
    for (int i = 0; i < TLC_MAX_RANK; i++) h->dims[i] = rd32(p + 48 + 4 * i);
    return TLC_OK;
}

int tlc_header_pack(const tlc_header *h, void *buf, size_t len) {
    if (!h || !buf || len < TLC_HEADER_SIZE || h->rank > TLC_MAX_RANK) return TLC_E_INVALID_ARGUMENT;
    unsigned char *p = (unsigned char *)buf;
    memset(p, 0, TLC_HEADER_SIZE);
    memcpy(p, MAGIC, 4);
    p[4] = TLC_PROTOCOL_VERSION;
    p[5] = h->type;
    p[6] = h->dtype;
    p[7] = h->rank;
    wr64(p + 8, h->request_id);
    wr32(p + 16, h->cut_id);
    wr16(p + 20, h->flags);
    p[22] = h->encoding;
    p[23] = h->status;
    wr64(p + 24, h->payload_len);
    uint32_t s;
    memcpy(&s, &h->scale, 4);
    wr32(p + 32, s);
    wr32(p + 36, (uint32_t)h->zero_point);
    wr32(p + 40, h->server_us);
    for (int i = 0; i < h->rank; i++) wr32(p + 48 + 4 * i, h->dims[i]);
    return TLC_OK;
}

int tlc_frame_check(const tlc_header *h, size_t payload_len) {
    if (!h) return TLC_E_INVALID_ARGUMENT;
    if (h->payload_len != (uint64_t)payload_len) return TLC_E_BAD_FRAME;
    if (h->type == TLC_ERROR || h->type == TLC_PING || h->type == TLC_PONG || !h->dtype) return TLC_OK;
    /* product of dims x element size, refusing overflow */
    uint64_t n = tlc_dtype_size(h->dtype);
    for (int i = 0; i < h->rank; i++) {
        if (h->dims[i] && n > UINT64_MAX / h->dims[i]) return TLC_E_WRONG_TENSOR;
        n *= h->dims[i];
    }
    return n == h->payload_len ? TLC_OK : TLC_E_WRONG_TENSOR;
}
