/* The edge's handler on real tiny bundles (runtime/c/tests/data, written by
 * scripts/make_c_test_bundle.py): the manifest is read and checked, results equal ONNX Runtime's
 * (float32 and uint8 inputs, an opset-17 model with a float16 output, int8 QDQ halves), bad
 * requests get their error codes in the Python edge's order and are counted, replays are refused
 * with the least recently used connection forgotten first, and the edge answers a good request
 * afterwards. Built once per engine (test_validation, test_validation_opencv); where the engines
 * differ (OpenCV 4.6 reads no opset-17 model), each is held to what it does.
 * Usage: test_validation DATA_DIR */
#include <sys/stat.h>
#include <unistd.h>

#include "edge_test.h"

static int openvino; /* the engine of this build: OpenVINO, else OpenCV */

/* A scratch folder holding only a manifest.json with ``text``. */
static const char *manifest_dir(const char *text) {
    static char dir[256];
    snprintf(dir, sizeof dir, "/tmp/tlcut-validation-XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    char p[300];
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return dir;
}

static void remove_dir(const char *dir) {
    char p[300];
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    unlink(p);
    rmdir(dir);
}

static void manifests(void) {
    tlc_edge *e = NULL;
    CHECK(tlc_edge_create("/no/such/bundle", &e) == TLC_E_NOT_FOUND && e == NULL, "missing bundle");
    CHECK(strstr(tlc_edge_last_error(NULL), "does not exist"), "missing bundle says so: %s", tlc_edge_last_error(NULL));
    CHECK(tlc_edge_create("/tmp", &e) == TLC_E_NOT_FOUND && strstr(tlc_edge_last_error(NULL), "no manifest.json"),
          "a folder without a manifest: %s", tlc_edge_last_error(NULL));
    struct { const char *json, *says; } bad[] = {
        {"{\"format\": \"tlcut-bundle\", \"version\": 1, \"cuts\": []}", "has format version 1"},
        {"{\"format\": \"tlcut-bundle\", \"cuts\": []}", "has format version null"},
        {"{\"format\": \"tlcut-bundle\", \"version\": 3, \"cuts\": []}", "reads version 2; re-export the bundle"},
        {"{\"format\": \"other\", \"version\": 2}", "not a tlcut bundle manifest"},
        {"{\"format\": \"tlcut-bundle\", \"version\": 2, \"cuts\": [", "not readable JSON"},
        {"{\"format\": \"tlcut-bundle\", \"version\": 2, \"cuts\": [{\"index\": \"zero\"}]}", "is damaged"},
        {"{\"format\": \"tlcut-bundle\", \"version\": 2, \"cuts\": [], \"artifacts\": 7}", "is damaged"},
        {"[1, 2]", "not readable JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *dir = manifest_dir(bad[i].json);
        int rc = tlc_edge_create(dir, &e);
        const char *msg = tlc_edge_last_error(NULL);
        CHECK(rc == TLC_E_BUNDLE && e == NULL && strstr(msg, bad[i].says) && !strchr(msg, '\n'), "manifest %zu: %s: %s", i,
              tlc_strerror(rc), msg);
        remove_dir(dir);
    }
    /* an artifact entry of the wrong shape is a one-line error at load time, not a crash */
    const char *dir = manifest_dir("{\"format\": \"tlcut-bundle\", \"version\": 2, \"cuts\": [{\"index\": 0, \"tensor\": \"a\", "
                                   "\"tl\": false}], \"artifacts\": [{\"kind\": \"tail\"}]}");
    CHECK(tlc_edge_create(dir, &e) == TLC_OK, "a manifest with a damaged artifact opens");
    CHECK(tlc_edge_add_cut(e, "0", 0) == TLC_E_BUNDLE && strstr(tlc_edge_last_error(e), "is damaged"), "damaged artifact: %s",
          tlc_edge_last_error(e));
    tlc_edge_destroy(e);
    remove_dir(dir);
}

static void cuts_and_results(void) {
    tlc_edge *e = open_edge("bundle");
    CHECK(tlc_edge_add_cut(e, "17", 0) == TLC_E_NOT_FOUND && strstr(tlc_edge_last_error(e), "the model has 4 cuts"),
          "no such cut: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_add_cut(e, "x1", 0) == TLC_E_NOT_FOUND, "no such tensor");
    CHECK(tlc_edge_add_cut(e, "3", 1) == TLC_E_INVALID_ARGUMENT && strstr(tlc_edge_last_error(e), "cannot apply at cut 3"),
          "TL where it cannot apply: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_add_cut(e, "r", -1) == TLC_OK, "cut 1 by its tensor name, both: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_add_cut(e, "input", 0) == TLC_OK, "input: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_add_cut(e, "3", -1) == TLC_OK, "both at a cut without the TL loads the plain tail: %s", tlc_edge_last_error(e));

    tlc_header t;
    CHECK(tlc_edge_request_header(e, 1, TLC_FLAG_TL, &t) == TLC_OK && t.dtype == TLC_F32 && t.rank == 4 && t.dims[2] == 4 &&
          t.payload_len == 256 && t.flags == TLC_FLAG_TL, "request header of cut 1 + TL");
    CHECK(tlc_edge_request_header(e, 3, TLC_FLAG_TL, &t) == TLC_E_WRONG_CUT, "cut 3 + TL is not served");

    uint32_t d[4] = {1, 4, 7, 7}, dtl[4] = {1, 4, 4, 4}, dx[4] = {1, 3, 7, 7};
    float *in = load("cut1_in.f32", 196 * 4), *out = load("cut1_out.f32", 16);
    float *tin = load("cut1_tl_in.f32", 64 * 4), *tout = load("cut1_tl_out.f32", 16);
    reply r = ask(e, req(1, 0, d, 4, 196 * 4), in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT && r.r.request_id == 42 && r.r.rank == 2 && r.r.dims[1] == 4 && r.len == 16, "plain result shape");
    for (int i = 0; i < 4 && r.len == 16; i++) CHECK(fabsf(((const float *)r.out)[i] - out[i]) <= 1e-4f, "plain value %d", i);
    r = ask(e, req(1, 1, dtl, 4, 64 * 4), tin, 64 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT && r.len == 16 && r.r.flags == TLC_FLAG_TL, "TL result");
    for (int i = 0; i < 4 && r.len == 16; i++) CHECK(fabsf(((const float *)r.out)[i] - tout[i]) <= 1e-4f, "TL value %d", i);
    /* the answer moves with the input */
    float *zeros = calloc(196, sizeof *zeros);
    r = ask(e, req(1, 0, d, 4, 196 * 4), zeros, 196 * 4, TLC_HEADER_SIZE);
    int moved = 0;
    for (int i = 0; i < 4 && r.len == 16; i++) moved |= fabsf(((const float *)r.out)[i] - out[i]) > 1e-3f;
    CHECK(r.r.type == TLC_RESULT && moved, "another input, another answer");
    /* a payload that is not aligned for float (ZeroMQ does not align frames) */
    unsigned char *odd = malloc(196 * 4 + 1);
    memcpy(odd + 1, in, 196 * 4);
    r = ask(e, req(1, 0, d, 4, 196 * 4), odd + 1, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT && r.len == 16 && fabsf(((const float *)r.out)[0] - out[0]) <= 1e-4f, "unaligned payload");
    free(odd);

    /* bad requests: each an ERROR with its code, counted */
    tlc_header h_dt0 = req(2, 1, d, 0, 0);
    h_dt0.dtype = 0; h_dt0.request_id = 77;
    tlc_header h_result = req(1, 0, d, 4, 196 * 4);
    h_result.type = TLC_RESULT;
    tlc_header h_ping_long = req(1, 0, d, 0, 8);
    h_ping_long.type = TLC_PING; h_ping_long.dtype = 0;
    tlc_header h_enc = req(1, 0, d, 4, 196 * 4);
    h_enc.encoding = TLC_ENC_FLOAT16; /* float16 encoding on a float32 payload */
    tlc_header h_i8 = req(1, 0, d, 4, 196);
    h_i8.dtype = TLC_I8; h_i8.encoding = TLC_ENC_INT8; h_i8.scale = 0; /* scale must be > 0 */
    tlc_header h_enc3 = req(1, 0, d, 4, 196 * 4);
    h_enc3.encoding = 3;
    struct { const char *name; tlc_header h; size_t len, hlen; int code; } bad[] = {
        {"wrong shape", req(1, 0, dtl, 4, 64 * 4), 64 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"TL flag on a plain payload", req(1, 1, d, 4, 196 * 4), 196 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"unserved cut", req(2, 0, d, 4, 196 * 4), 196 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_CUT},
        {"payload shorter than header says", req(1, 0, d, 4, 196 * 4), 100, TLC_HEADER_SIZE, TLC_E_BAD_FRAME},
        {"lying dims", req(1, 0, d, 4, 64 * 4), 64 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"truncated header", req(1, 0, d, 4, 196 * 4), 196 * 4, 40, TLC_E_BAD_FRAME},
        {"a RESULT sent to the edge", h_result, 196 * 4, TLC_HEADER_SIZE, TLC_E_BAD_TYPE},
        {"a PING with a payload the header does not announce", h_ping_long, 4, TLC_HEADER_SIZE, TLC_E_BAD_FRAME},
        {"dtype 0 to an unserved cut: no tensor comes before the cut", h_dt0, 0, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"float16 encoding of a float32 payload", h_enc, 196 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"int8 encoding with scale 0", h_i8, 196, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
        {"unknown encoding", h_enc3, 196 * 4, TLC_HEADER_SIZE, TLC_E_WRONG_TENSOR},
    };
    tlc_edge_stats s0, s1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tlc_edge_stats_get(e, &s0);
        r = ask(e, bad[i].h, in, bad[i].len, bad[i].hlen);
        tlc_edge_stats_get(e, &s1);
        CHECK(r.r.type == TLC_ERROR && r.r.status == bad[i].code, "%s: got type %d status %d (%.*s)", bad[i].name, r.r.type,
              r.r.status, (int)r.len, (const char *)r.out);
        CHECK(r.len > 0 && r.len == r.r.payload_len && r.len <= TLC_MAX_ERROR_TEXT, "%s: an error message", bad[i].name);
        CHECK(s1.errors[bad[i].code] == s0.errors[bad[i].code] + 1, "%s: counted", bad[i].name);
        int parsed = bad[i].hlen == TLC_HEADER_SIZE;
        CHECK(r.r.request_id == (parsed ? bad[i].h.request_id : 0) && r.r.cut_id == (parsed ? bad[i].h.cut_id : TLC_INPUT_CUT) &&
              r.r.flags == (parsed ? bad[i].h.flags : 0), "%s: the reply carries the header's ids and flags", bad[i].name);
    }
    /* the message says what the edge serves instead */
    r = ask(e, req(2, 0, d, 4, 196 * 4), in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.len && strstr((const char *)r.out, "it serves cut 1 (float32[1, 4, 7, 7]), cut 1 + TL"), "wrong cut message: %.*s",
          (int)r.len, (const char *)r.out);
    tlc_header h = req(1, 0, d, 4, 196 * 4);
    h.dtype = TLC_F64; h.payload_len = 196 * 8;
    double *dbl = calloc(196, sizeof *dbl);
    r = ask(e, h, dbl, 196 * 8, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_WRONG_TENSOR, "wrong dtype");
    CHECK(tlc_edge_set_max_message(e, 10) == TLC_E_INVALID_ARGUMENT, "a limit below one header");
    tlc_edge_set_max_message(e, 200);
    r = ask(e, req(1, 0, d, 4, 196 * 4), in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_TOO_LARGE && r.r.request_id == 0, "oversized");
    r = ask(e, req(1, 0, d, 4, 196 * 4), in, 196 * 4, 40);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_TOO_LARGE, "the size limit comes before the header checks");
    tlc_edge_set_max_message(e, 1 << 20);
    /* a PING is answered with a PONG carrying its id */
    tlc_header ping = {0};
    ping.type = TLC_PING; ping.request_id = 99; ping.cut_id = 5;
    r = ask(e, ping, NULL, 0, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_PONG && r.r.request_id == 99 && r.len == 0, "PONG");
    /* still serving */
    float *x0 = calloc(147, sizeof *x0);
    r = ask(e, req(TLC_INPUT_CUT, 0, dx, 4, 147 * 4), x0, 147 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT && r.len == 16, "whole model after the errors");
    tlc_edge_stats s;
    tlc_edge_stats_get(e, &s);
    CHECK(s.results == 5 && s.pings == 1 && s.denied == 0, "counters");
    tlc_edge_destroy(e);
    tlc_edge_destroy(NULL);
    free(in); free(out); free(tin); free(tout); free(dbl); free(zeros); free(x0);
}

/* Replays per connection; the table keeps TLC_REPLAY_TABLE connections and forgets the least
 * recently used one (the Python edge's rule), not all of them at once. */
static void replays(void) {
    tlc_edge *e = open_edge("bundle");
    CHECK(tlc_edge_add_cut(e, "1", 0) == TLC_OK, "cut 1");
    uint32_t d[4] = {1, 4, 7, 7};
    float *in = load("cut1_in.f32", 196 * 4);
    tlc_header h = req(1, 0, d, 4, 196 * 4);
    h.request_id = 5;
    reply r = ask_from(e, "dev-a", h, in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT, "first request");
    r = ask_from(e, "dev-a", h, in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_REPLAY && r.r.request_id == 5, "the same id again is refused");
    r = ask_from(e, "dev-b", h, in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT, "the same id from another connection is fine");
    r = ask(e, h, in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT, "no peer, no replay check");
    /* a REQUEST without a tensor is refused before the replay check: it does not use up the id */
    tlc_header none = h;
    none.dtype = 0; none.rank = 0; none.payload_len = 0; none.request_id = 6;
    r = ask_from(e, "dev-a", none, NULL, 0, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_WRONG_TENSOR && r.r.request_id == 6 && r.r.cut_id == 1, "no tensor");
    h.request_id = 6;
    r = ask_from(e, "dev-a", h, in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT, "id 6 is still free after the refused request without a tensor");

    /* fill the table: dev-a stays recent, so it is remembered; dev-b, idle, is forgotten */
    tlc_header cheap = h; /* an unserved cut: recorded for replay, then refused without inference */
    cheap.cut_id = 2;
    cheap.request_id = 1;
    char peer[32];
    for (int i = 0; i < TLC_REPLAY_TABLE - 2; i++) {
        snprintf(peer, sizeof peer, "filler-%d", i);
        r = ask_from(e, peer, cheap, in, 196 * 4, TLC_HEADER_SIZE);
        if (i == TLC_REPLAY_TABLE / 2) {
            h.request_id = 7;
            r = ask_from(e, "dev-a", h, in, 196 * 4, TLC_HEADER_SIZE);
            CHECK(r.r.type == TLC_RESULT, "dev-a sends again");
        }
    }
    r = ask_from(e, "newcomer", cheap, in, 196 * 4, TLC_HEADER_SIZE); /* one more than the table holds */
    h.request_id = 5;
    r = ask_from(e, "dev-b", h, in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT, "dev-b, the least recently used, was forgotten");
    h.request_id = 7;
    r = ask_from(e, "dev-a", h, in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_REPLAY, "dev-a, used recently, is still remembered (a full table is not cleared)");
    snprintf(peer, sizeof peer, "filler-%d", TLC_REPLAY_TABLE - 3);
    r = ask_from(e, peer, cheap, in, 196 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_REPLAY, "a recent filler is remembered");
    free(in);
    tlc_edge_destroy(e);
}

/* A bundle whose model takes uint8 (an image with its preprocessing inside the model). */
static void uint8_input(void) {
    tlc_edge *e = open_edge("bundle_u8");
    CHECK(tlc_edge_add_cut(e, "input", 0) == TLC_OK, "uint8 model: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_add_cut(e, "2", -1) == TLC_OK, "uint8 model, cut 2: %s", tlc_edge_last_error(e));
    uint32_t dx[4] = {1, 3, 6, 6};
    unsigned char *x = load("u8_in.u8", 108);
    float *want = load("u8_out.f32", 16);
    tlc_header h = req(TLC_INPUT_CUT, 0, dx, 4, 108);
    h.dtype = TLC_U8;
    reply r = ask(e, h, x, 108, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_RESULT && r.len == 16, "uint8 request answered: type %d status %d %.*s", r.r.type, r.r.status,
          r.r.type == TLC_ERROR ? (int)r.len : 0, (const char *)r.out);
    for (int i = 0; i < 4 && r.len == 16; i++)
        CHECK(fabsf(((const float *)r.out)[i] - want[i]) <= 1e-4f, "uint8 value %d: %g, ONNX Runtime %g", i, ((const float *)r.out)[i], want[i]);
    float first[4] = {0};
    if (r.len == 16) memcpy(first, r.out, 16);
    unsigned char inverted[108];
    for (int i = 0; i < 108; i++) inverted[i] = (unsigned char)(255 - x[i]);
    r = ask(e, h, inverted, 108, TLC_HEADER_SIZE);
    int moved = 0;
    for (int i = 0; i < 4 && r.len == 16; i++) moved |= fabsf(((const float *)r.out)[i] - first[i]) > 1e-3f;
    CHECK(r.r.type == TLC_RESULT && moved, "the uint8 answer moves with the input");
    /* float32 for a uint8 input is the wrong tensor, named as such */
    tlc_header f = req(TLC_INPUT_CUT, 0, dx, 4, 108 * 4);
    float *xf = calloc(108, sizeof *xf);
    r = ask(e, f, xf, 108 * 4, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_WRONG_TENSOR && r.len && strstr((const char *)r.out, "takes uint8[1, 3, 6, 6]"),
          "float32 for uint8: %.*s", (int)r.len, (const char *)r.out);
    free(x); free(want); free(xf);
    tlc_edge_destroy(e);
}

/* A result of rank 9 cannot be written into a header: an ERROR reply, never an unwritten header. */
static void unpackable_result(void) {
    tlc_edge *e = open_edge("bundle_rank9");
    CHECK(tlc_edge_add_cut(e, "0", 0) == TLC_E_NOT_FOUND && strstr(tlc_edge_last_error(e), "has no compiled tail") &&
          strstr(tlc_edge_last_error(e), "tlcut compile"), "a cut that was not compiled: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_add_cut(e, "input", 0) == TLC_OK, "rank-9 model: %s", tlc_edge_last_error(e));
    uint32_t dx[2] = {1, 4};
    float x[4] = {1, 2, 3, 4};
    reply r = ask(e, req(TLC_INPUT_CUT, 0, dx, 2, 16), x, 16, TLC_HEADER_SIZE);
    CHECK(r.r.type == TLC_ERROR && r.r.status == TLC_E_INTERNAL && r.r.request_id == 42 && r.len &&
          strstr((const char *)r.out, "rank 9"), "rank 9 result: type %d status %d", r.r.type, r.r.status);
    tlc_edge_destroy(e);
}

/* An opset-17 model whose output is float16: OpenVINO serves it and the reply is float16, as the
 * model gives it; OpenCV 4.6 cannot load it, and says so at load time, in one line. */
static void opset17(void) {
    tlc_edge *e = open_edge("bundle_op17");
    int rc_in = tlc_edge_add_cut(e, "input", 0), rc_cut = tlc_edge_add_cut(e, "1", 0);
    if (!openvino) {
        CHECK(rc_in == TLC_E_ENGINE && rc_cut == TLC_E_ENGINE && strstr(tlc_edge_last_error(e), "opset 12") &&
              !strchr(tlc_edge_last_error(e), '\n'), "OpenCV refuses opset 17: %s", tlc_edge_last_error(e));
        tlc_edge_destroy(e);
        return;
    }
    CHECK(rc_in == TLC_OK && rc_cut == TLC_OK, "opset 17: %s", tlc_edge_last_error(e));
    uint32_t dx[4] = {1, 3, 7, 7}, dc[4] = {1, 4, 7, 7};
    float *x = load("op17_in.f32", 147 * 4), *mid = load("op17_cut1_in.f32", 196 * 4);
    uint16_t *want = load("op17_out.f16", 8), *want_cut = load("op17_cut1_out.f16", 8);
    struct { uint32_t cut; const uint32_t *dims; const void *in; size_t len; const uint16_t *want; } cases[] = {
        {TLC_INPUT_CUT, dx, x, 147 * 4, want}, {1, dc, mid, 196 * 4, want_cut}};
    for (int c = 0; c < 2; c++) {
        reply r = ask(e, req(cases[c].cut, 0, cases[c].dims, 4, cases[c].len), cases[c].in, cases[c].len, TLC_HEADER_SIZE);
        CHECK(r.r.type == TLC_RESULT && r.r.dtype == TLC_F16 && r.r.rank == 2 && r.r.dims[1] == 4 && r.len == 8,
              "case %d: a float16 [1, 4] result: type %d dtype %d len %zu", c, r.r.type, r.r.dtype, r.len);
        for (int i = 0; i < 4 && r.len == 8; i++) {
            float got = half_to_float(((const uint16_t *)r.out)[i]), ref = half_to_float(cases[c].want[i]);
            CHECK(fabsf(got - ref) <= 4e-3f, "case %d value %d: %g, ONNX Runtime %g", c, i, got, ref);
        }
    }
    free(x); free(mid); free(want); free(want_cut);
    tlc_edge_destroy(e);
}

/* --precision int8: the int8 rows of the artifact table, or a one-line error naming the command
 * that makes them. */
static void int8_halves(void) {
    tlc_edge *e = open_edge("bundle");
    CHECK(tlc_edge_set_precision(e, "fp8") == TLC_E_INVALID_ARGUMENT && strstr(tlc_edge_last_error(e), "float32 or int8"),
          "an unknown precision: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_set_precision(e, NULL) == TLC_E_INVALID_ARGUMENT && tlc_edge_set_precision(NULL, "int8") == TLC_E_INVALID_ARGUMENT,
          "NULL arguments");
    CHECK(tlc_edge_set_threads(e, -1) == TLC_E_INVALID_ARGUMENT && tlc_edge_set_threads(e, 1) == TLC_OK, "threads");
    CHECK(tlc_edge_set_precision(e, "int8") == TLC_OK, "int8");
    CHECK(tlc_edge_add_cut(e, "1", 0) == TLC_E_NOT_FOUND && strstr(tlc_edge_last_error(e), "has no compiled int8 tail") &&
          strstr(tlc_edge_last_error(e), "--cuts 1 --precision int8 --calib DATA` first"),
          "no int8 tail: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_add_cut(e, "input", 0) == TLC_E_NOT_FOUND && strstr(tlc_edge_last_error(e), "no int8 ONNX of the whole model"),
          "no int8 whole model: %s", tlc_edge_last_error(e));
    tlc_edge_destroy(e);

    uint32_t dx[4] = {1, 8, 8, 3};
    float *x = load("int8_in.f32", 192 * 4), *want = load("int8_out.f32", 16), *want_f32 = load("int8_out_f32model.f32", 16);
    float *step = load("int8_out_step.f32", 4);
    float got[2][4] = {{0}};
    for (int q = 0; q < 2; q++) {  /* float32, then int8 */
        e = open_edge("bundle_int8");
        CHECK(tlc_edge_set_threads(e, 1) == TLC_OK && tlc_edge_set_precision(e, q ? "int8" : "float32") == TLC_OK, "settings");
        int rc = tlc_edge_add_cut(e, "input", 0);
        if (!rc) rc = tlc_edge_add_cut(e, "r2", -1);
        if (q && !openvino && rc) { /* OpenCV 4.6 may refuse QDQ graphs; if so, at load time, in one line */
            CHECK(rc == TLC_E_ENGINE && !strchr(tlc_edge_last_error(e), '\n'), "OpenCV and int8: %s", tlc_edge_last_error(e));
            tlc_edge_destroy(e);
            break;
        }
        CHECK(rc == TLC_OK, "bundle_int8 at %s: %s", q ? "int8" : "float32", tlc_edge_last_error(e));
        tlc_header h = req(TLC_INPUT_CUT, 0, dx, 4, 192 * 4);
        reply r = ask(e, h, x, 192 * 4, TLC_HEADER_SIZE);
        CHECK(r.r.type == TLC_RESULT && r.r.dtype == TLC_F32 && r.len == 16, "%s result", q ? "int8" : "float32");
        if (r.len == 16) memcpy(got[q], r.out, 16);
        /* float32: ONNX Runtime's answer. int8: the QDQ graph computed as written. Int8 kernels may
         * still differ from it by CPU (halves with 8-bit weights, on an AVX2 CPU without VNNI, came
         * several output steps off; the 7-bit weights tlcut now writes come exact), so the answer
         * must be a whole number of output steps (the quantized graph ran, not a float one) and
         * within 4 steps of the reference. */
        for (int i = 0; i < 4; i++) {
            if (!q) {
                CHECK(fabsf(got[q][i] - want_f32[i]) <= 1e-3f, "float32 value %d: %g, ONNX Runtime %g", i, got[q][i], want_f32[i]);
                continue;
            }
            float k = got[q][i] / step[0];
            CHECK(fabsf(k - rintf(k)) <= 1e-3f, "int8 value %d: %g is not a whole number of output steps (%g)", i, got[q][i], step[0]);
            CHECK(fabsf(got[q][i] - want[i]) <= 4 * step[0], "int8 value %d: %g, the QDQ graph %g (step %g)", i, got[q][i], want[i], step[0]);
        }
        tlc_header t;
        CHECK(tlc_edge_request_header(e, 4, TLC_FLAG_TL, &t) == TLC_OK && t.dims[2] == 4, "cut 4 + TL is served at %s", q ? "int8" : "float32");
        tlc_edge_destroy(e);
        if (q) { /* the int8 answer is the quantized model's, not the float32 one's */
            float d = 0;
            for (int i = 0; i < 4; i++) d = fmaxf(d, fabsf(got[1][i] - got[0][i]));
            CHECK(d > 5e-3f, "int8 and float32 answers differ (by %g)", d);
        }
    }
    free(x); free(want); free(want_f32); free(step);
}

int main(int argc, char **argv) {
    if (argc != 2) { printf("usage: test_validation DATA_DIR\n"); return 2; }
    data = argv[1];
    openvino = strncmp(tlc_engine(), "openvino ", 9) == 0;
    CHECK(openvino || strncmp(tlc_engine(), "opencv ", 7) == 0, "engine: %s", tlc_engine());
    printf("engine: %s\n", tlc_engine());
    manifests();
    cuts_and_results();
    replays();
    uint8_input();
    unpackable_result();
    opset17();
    int8_halves();
    printf("validation: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
