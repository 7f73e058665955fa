/* libFuzzer target: the whole request path of the C edge (tlc_edge_handle_from: size limit,
 * framing, replay table, cut lookup, encodings, shape checks, the engine, the reply) on
 * the committed test bundle, loaded once with cuts 0 and 1 (both TL modes) and the whole model.
 *
 * Input: one mode byte, then the header frame, then the payload frame.
 *   bit 0: the request comes from a connection (a fresh peer id per input, so the replay table
 *          fills and evicts as inputs go by, while each input's outcome stays its own);
 *   bit 1: send it twice: from a peer, the second must be refused as a replay wherever the first
 *          got past the replay check; without a peer, the second must get the same answer;
 *   bit 2: the header frame is (mode >> 3) bytes (0..31) instead of 80 (truncated headers).
 * Every reply must be well formed: its header parses, it is a RESULT, ERROR or PONG whose
 * payload length matches, and it carries the request's id, cut and TL flag. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlcut.h"

#ifndef TLCUT_FUZZ_BUNDLE
#define TLCUT_FUZZ_BUNDLE "runtime/c/tests/data/bundle"
#endif
#define MAX_MESSAGE 2048 /* small, so the size limit is reachable within libFuzzer's input sizes */

static tlc_edge *edge;
static unsigned long long inputs;
static volatile unsigned char sink;
static unsigned long long replies[6], errors[10]; /* by reply type, and ERRORs by code */

/* How deep the inputs went, for benchmarks/fuzz.sh: a line at exit. */
static void report(void) {
    fprintf(stderr, "fuzz_edge replies: results %llu, pongs %llu, errors %llu (by code 1..9:", replies[TLC_RESULT],
            replies[TLC_PONG], replies[TLC_ERROR]);
    for (int i = 1; i < 10; i++) fprintf(stderr, " %llu", errors[i]);
    fprintf(stderr, ")\n");
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *b = getenv("TLCUT_FUZZ_BUNDLE");
    if (!b) b = TLCUT_FUZZ_BUNDLE;
    int rc = tlc_edge_create(b, &edge);
    if (!rc) rc = tlc_edge_set_threads(edge, 1); /* one engine thread: steadier executions per second */
    const char *cuts[] = {"0", "1", "input"};
    for (int i = 0; !rc && i < 3; i++) rc = tlc_edge_add_cut(edge, cuts[i], i < 2 ? -1 : 0);
    if (!rc) rc = tlc_edge_set_max_message(edge, MAX_MESSAGE);
    if (rc) {
        fprintf(stderr, "fuzz_edge: cannot load %s: %s\n", b, edge ? tlc_edge_last_error(edge) : tlc_edge_last_error(NULL));
        abort();
    }
    atexit(report);
    return 0;
}

/* Check one reply against its request; returns the parsed reply header. */
static tlc_header check(const unsigned char *hdr, size_t hl, size_t total, const unsigned char *rh, const void *rp, size_t rpl) {
    tlc_header r, q;
    if (tlc_header_parse(rh, TLC_HEADER_SIZE, &r) != TLC_OK) __builtin_trap();
    if (r.payload_len != rpl || (rpl && !rp)) __builtin_trap();
    unsigned char acc = 0; /* read every byte of the reply, so ASan sees a short buffer */
    for (size_t i = 0; i < rpl; i++) acc ^= ((const unsigned char *)rp)[i];
    sink = acc;
    switch (r.type) {
    case TLC_RESULT:
        if (r.dtype != TLC_F32 || r.status || tlc_frame_check(&r, rpl) != TLC_OK || !rpl) __builtin_trap();
        break;
    case TLC_ERROR:
        if (r.status < 1 || r.status > 9 || r.dtype || r.rank || !rpl || rpl > TLC_MAX_ERROR_TEXT) __builtin_trap();
        break;
    case TLC_PONG:
        if (rpl || r.cut_id != TLC_INPUT_CUT) __builtin_trap();
        break;
    default: __builtin_trap();
    }
    replies[r.type]++;
    if (r.type == TLC_ERROR) errors[r.status]++;
    int parsed = total <= MAX_MESSAGE && tlc_header_parse(hdr, hl, &q) == TLC_OK;
    if (parsed) {
        if (r.request_id != q.request_id) __builtin_trap();
        if (r.type != TLC_PONG && (r.cut_id != q.cut_id || r.flags != (q.flags & TLC_FLAG_TL))) __builtin_trap();
        if (r.type == TLC_PONG && q.type != TLC_PING) __builtin_trap();
        if (r.type == TLC_RESULT && q.type != TLC_REQUEST) __builtin_trap();
    } else if (r.type != TLC_ERROR || r.request_id != 0 || r.cut_id != TLC_INPUT_CUT) {
        __builtin_trap(); /* no header: an ERROR with request_id 0 (or too large, also 0) */
    }
    return r;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 1) return 0;
    unsigned mode = data[0];
    data++, size--;
    size_t hl = (mode & 4) ? (mode >> 3) : TLC_HEADER_SIZE;
    if (hl > size) hl = size;
    const unsigned char *payload = data + hl;
    size_t pl = size - hl;
    char peer[32];
    size_t peer_len = 0;
    if (mode & 1) peer_len = (size_t)snprintf(peer, sizeof peer, "fuzz-%llu", inputs++);
    unsigned char rh[TLC_HEADER_SIZE];
    const void *rp = NULL;
    size_t rpl = 0;
    /* copies, so reads past the frames are caught by ASan even though they come from one input */
    unsigned char *h = malloc(hl ? hl : 1), *p = malloc(pl ? pl : 1);
    memcpy(h, data, hl);
    memcpy(p, payload, pl);
    if (tlc_edge_handle_from(edge, peer_len ? peer : NULL, peer_len, h, hl, p, pl, rh, &rp, &rpl) != TLC_OK) __builtin_trap();
    tlc_header first = check(h, hl, hl + pl, rh, rp, rpl);
    if (mode & 2) {
        if (tlc_edge_handle_from(edge, peer_len ? peer : NULL, peer_len, h, hl, p, pl, rh, &rp, &rpl) != TLC_OK) __builtin_trap();
        tlc_header second = check(h, hl, hl + pl, rh, rp, rpl);
        int recorded = first.type == TLC_RESULT ||
                       (first.type == TLC_ERROR && (first.status == TLC_E_WRONG_CUT || first.status == TLC_E_INTERNAL));
        if (peer_len && recorded && !(second.type == TLC_ERROR && second.status == TLC_E_REPLAY)) __builtin_trap();
        if (!peer_len && (second.type != first.type || second.status != first.status)) __builtin_trap();
    }
    free(h);
    free(p);
    return 0;
}
