/* The edge's handler on a real tiny bundle: results equal ONNX Runtime's, bad requests get
 * their error codes and are counted, and the edge answers a good request afterwards. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlcut.h"

static int failures = 0;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static float *load(const char *dir, const char *name, size_t n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/../%s.f32", dir, name);
    FILE *f = fopen(p, "rb");
    float *a = calloc(n, sizeof *a);
    if (!f || fread(a, sizeof *a, n, f) != n) { printf("cannot read %s\n", p); exit(2); }
    fclose(f);
    return a;
}

typedef struct { tlc_header r; const void *out; size_t len; } reply;

static reply ask(tlc_edge *e, tlc_header h, const void *payload, size_t len, size_t header_len) {
    unsigned char hb[TLC_HEADER_SIZE], rb[TLC_HEADER_SIZE];
    reply r = {0};
    tlc_header_pack(&h, hb, sizeof hb);
    int rc = tlc_edge_handle(e, hb, header_len, payload, len, rb, &r.out, &r.len);
    CHECK(rc == TLC_OK, "handle returned %s", tlc_strerror(rc));
    CHECK(tlc_header_parse(rb, sizeof rb, &r.r) == TLC_OK, "reply header does not parse");
    return r;
}

static tlc_header req(uint32_t cut, int tl, const uint32_t *dims, int rank, size_t bytes) {
    tlc_header h = {0};
    h.type = TLC_REQUEST; h.dtype = TLC_F32; h.rank = (uint8_t)rank; h.request_id = 42; h.cut_id = cut;
    h.flags = tl ? TLC_FLAG_TL : 0; h.payload_len = bytes;
    memcpy(h.dims, dims, rank * sizeof *dims);
    return h;
}

int main(int argc, char **argv) {
    if (argc != 2) { printf("usage: test_validation BUNDLE\n"); return 2; }
    tlc_edge *e = NULL;
    CHECK(tlc_edge_create("/no/such/bundle", &e) == TLC_E_NOT_FOUND && e == NULL, "missing bundle");
    CHECK(tlc_edge_create(argv[1], &e) == TLC_OK, "open bundle");
    CHECK(tlc_edge_add_cut(e, "17", 0) == TLC_E_NOT_FOUND && strstr(tlc_edge_last_error(e), "tlcut compile"), "missing cut");
    CHECK(tlc_edge_add_cut(e, "x1", 0) == TLC_E_INVALID_ARGUMENT, "bad cut name");
    CHECK(tlc_edge_add_cut(e, "1", -1) == TLC_OK, "cut 1 both: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_add_cut(e, "input", 0) == TLC_OK, "input: %s", tlc_edge_last_error(e));

    uint32_t d[4] = {1, 4, 7, 7}, dtl[4] = {1, 4, 4, 4}, dx[4] = {1, 3, 7, 7};
    float *in = load(argv[1], "cut1_in", 196), *out = load(argv[1], "cut1_out", 4);
    float *tin = load(argv[1], "cut1_tl_in", 64), *tout = load(argv[1], "cut1_tl_out", 4);
    reply r = ask(e, req(1, 0, d, 4, 196 * 4), in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT && r.r.request_id == 42 && r.r.rank == 2 && r.r.dims[1] == 4 && r.len == 16, "plain result shape");
    for (int i = 0; i < 4 && r.len == 16; i++) CHECK(fabsf(((const float *)r.out)[i] - out[i]) <= 1e-4f, "plain value %d", i);
    r = ask(e, req(1, 1, dtl, 4, 64 * 4), tin, 64 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT && r.len == 16 && r.r.flags == TLC_FLAG_TL, "TL result");
    for (int i = 0; i < 4 && r.len == 16; i++) CHECK(fabsf(((const float *)r.out)[i] - tout[i]) <= 1e-4f, "TL value %d", i);

    /* bad requests: each an ERROR with its code, counted */
    struct { const char *name; tlc_header h; size_t len, hlen; int code; } bad[] = {
        {"wrong shape", req(1, 0, dtl, 4, 64 * 4), 64 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"TL flag on a plain payload", req(1, 1, d, 4, 196 * 4), 196 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"unserved cut", req(2, 0, d, 4, 196 * 4), 196 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_CUT},
        {"payload shorter than header says", req(1, 0, d, 4, 196 * 4), 100, TLC_HEADER_SIZE, TLC_E_BAD_FRAME},
        {"lying dims", req(1, 0, d, 4, 64 * 4), 64 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"truncated header", req(1, 0, d, 4, 196 * 4), 196 * 4, 40, TLC_E_BAD_FRAME},
    };
    tlc_edge_stats s0, s1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tlc_edge_stats_get(e, &s0);
        r = ask(e, bad[i].h, in, bad[i].len, bad[i].hlen);
        tlc_edge_stats_get(e, &s1);
        CHECK(r.r.type == TLC_ERROR && r.r.status == bad[i].code, "%s: got type %d status %d", bad[i].name, r.r.type, r.r.status);
        CHECK(r.len > 0 && r.len == r.r.payload_len, "%s: an error message", bad[i].name);
        CHECK(s1.errors[bad[i].code] == s0.errors[bad[i].code] + 1, "%s: counted", bad[i].name);
    }
    tlc_header h = req(1, 0, d, 4, 196 * 4);
    h.dtype = TLC_F64; h.payload_len = 196 * 8;
    double *dbl = calloc(196, sizeof *dbl);
    r = ask(e, h, dbl, 196 * 8, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_WRONG_TENSOR, "wrong dtype");
    tlc_edge_set_max_message(e, 200);
    r = ask(e, req(1, 0, d, 4, 196 * 4), in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_TOO_LARGE, "oversized");
    tlc_edge_set_max_message(e, 1 << 20);
    /* encodings: float16 and int8 are restored before the tail */
    h = req(1, 0, d, 4, 196 * 2);
    h.dtype = TLC_F16; h.encoding = TLC_ENC_FLOAT16;
    unsigned short *half = calloc(196, sizeof *half); /* zeros */
    r = ask(e, h, half, 196 * 2, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT, "float16 payload");
    /* still serving */
    float *zeros = calloc(147, sizeof *zeros);
    r = ask(e, req(TLC_INPUT_CUT, 0, dx, 4, 147 * 4), zeros, 147 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT && r.len == 16, "whole model after the errors");
    free(zeros);
    tlc_edge_destroy(e);
    tlc_edge_destroy(NULL);
    free(in); free(out); free(tin); free(tout); free(dbl); free(half);
    printf("validation: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
