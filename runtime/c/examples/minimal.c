/* The smallest use of libtlcut from plain C: open a bundle, load a tail, answer one request
 * built by hand, print the result. Usage: minimal BUNDLE CUT (an index, or "input") */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlcut.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s BUNDLE CUT\n", argv[0]); return 2; }
    printf("libtlcut %s (header %s)\n", tlc_version(), TLC_VERSION_STRING);
    tlc_edge *edge = NULL;
    int rc = tlc_edge_create(argv[1], &edge);
    if (rc) { fprintf(stderr, "open %s: %s: %s\n", argv[1], tlc_strerror(rc), tlc_edge_last_error(NULL)); return 1; }
    if ((rc = tlc_edge_add_cut(edge, argv[2], 0))) {
        fprintf(stderr, "cut %s: %s: %s\n", argv[2], tlc_strerror(rc), tlc_edge_last_error(edge));
        tlc_edge_destroy(edge);
        return 1;
    }
    /* the header of a request for that tail: its dtype and shape, as the manifest lists them */
    uint32_t cut_id = strcmp(argv[2], "input") ? (uint32_t)strtoul(argv[2], NULL, 10) : TLC_INPUT_CUT;
    tlc_header h;
    if ((rc = tlc_edge_request_header(edge, cut_id, 0, &h))) {
        fprintf(stderr, "cut %s: %s\n", argv[2], tlc_strerror(rc));
        tlc_edge_destroy(edge);
        return 1;
    }
    void *x = calloc(1, h.payload_len ? h.payload_len : 1); /* an all-zero input */
    h.request_id = 1;
    unsigned char hdr[TLC_HEADER_SIZE], reply[TLC_HEADER_SIZE];
    tlc_header_pack(&h, hdr, sizeof hdr);
    const void *out = NULL;
    size_t out_len = 0;
    rc = tlc_edge_handle(edge, hdr, sizeof hdr, x, h.payload_len, reply, &out, &out_len);
    tlc_header r;
    if (rc || tlc_header_parse(reply, sizeof reply, &r) || r.type != TLC_RESULT) {
        fprintf(stderr, "request failed: %s\n", rc ? tlc_strerror(rc) : tlc_edge_last_error(edge));
        free(x);
        tlc_edge_destroy(edge);
        return 1;
    }
    printf("result: %zu floats, first %g, edge time %u us\n", out_len / 4, ((const float *)out)[0], r.server_us);
    free(x);
    tlc_edge_destroy(edge);
    tlc_edge_destroy(NULL); /* a no-op */
    return 0;
}
