/* What the handler tests share (test_validation.c, test_encodings.c): a CHECK that counts failures,
 * the test data folder, and requests to a tlc_edge through tlc_edge_handle_from. */
#ifndef TLCUT_EDGE_TEST_H
#define TLCUT_EDGE_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlcut.h"

static int failures = 0;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static const char *data; /* runtime/c/tests/data, from the command line */

static inline float half_to_float(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 0x400), e - 25);
    return (h & 0x8000) ? -v : v;
}

static inline void *load(const char *name, size_t bytes) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", data, name);
    FILE *f = fopen(p, "rb");
    void *a = calloc(1, bytes);
    if (!f || fread(a, 1, bytes, f) != bytes) { printf("cannot read %s\n", p); exit(2); }
    fclose(f);
    return a;
}

static inline tlc_edge *open_edge(const char *bundle) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", data, bundle);
    tlc_edge *e = NULL;
    int rc = tlc_edge_create(p, &e);
    if (rc) { printf("cannot open %s: %s\n", p, tlc_edge_last_error(NULL)); exit(2); }
    return e;
}

typedef struct { tlc_header r; const void *out; size_t len; } reply;

static inline reply ask_from(tlc_edge *e, const char *peer, tlc_header h, const void *payload, size_t len, size_t header_len) {
    unsigned char hb[TLC_HEADER_SIZE], rb[TLC_HEADER_SIZE];
    memset(rb, 0xEE, sizeof rb); /* a reply header the edge did not write must not parse */
    reply r = {0};
    CHECK(tlc_header_pack(&h, hb, sizeof hb) == TLC_OK, "request header packs");
    int rc = tlc_edge_handle_from(e, peer, peer ? strlen(peer) : 0, hb, header_len, payload, len, rb, &r.out, &r.len);
    CHECK(rc == TLC_OK, "handle returned %s", tlc_strerror(rc));
    CHECK(tlc_header_parse(rb, sizeof rb, &r.r) == TLC_OK, "reply header does not parse");
    CHECK(r.r.payload_len == r.len, "reply payload_len %llu, frame %zu", (unsigned long long)r.r.payload_len, r.len);
    return r;
}

static inline reply ask(tlc_edge *e, tlc_header h, const void *payload, size_t len, size_t header_len) {
    return ask_from(e, NULL, h, payload, len, header_len);
}

static inline tlc_header req(uint32_t cut, int tl, const uint32_t *dims, int rank, size_t bytes) {
    tlc_header h = {0};
    h.type = TLC_REQUEST; h.dtype = TLC_F32; h.rank = (uint8_t)rank; h.request_id = 42; h.cut_id = cut;
    h.flags = tl ? TLC_FLAG_TL : 0; h.payload_len = bytes;
    memcpy(h.dims, dims, rank * sizeof *dims);
    return h;
}


#endif
