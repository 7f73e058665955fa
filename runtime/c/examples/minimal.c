/* The smallest use of libtlcut from plain C: open a bundle, load a tail, answer one request
 * built by hand, print the result. Usage: minimal BUNDLE CUT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlcut.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s BUNDLE CUT\n", argv[0]); return 2; }
    printf("libtlcut %s (header %d.%d.%d)\n", tlc_version(), TLC_VERSION_MAJOR, TLC_VERSION_MINOR, TLC_VERSION_PATCH);
    tlc_edge *edge = NULL;
    int rc = tlc_edge_create(argv[1], &edge);
    if (rc) { fprintf(stderr, "open %s: %s\n", argv[1], tlc_strerror(rc)); return 1; }
    if ((rc = tlc_edge_add_cut(edge, argv[2], 0))) {
        fprintf(stderr, "cut %s: %s: %s\n", argv[2], tlc_strerror(rc), tlc_edge_last_error(edge));
        tlc_edge_destroy(edge);
        return 1;
    }
    /* the cut's input size comes from halves/CUT/io.txt, as the edge read it */
    char path[1024];
    snprintf(path, sizeof path, "%s/halves/%s/io.txt", argv[1], argv[2]);
    FILE *f = fopen(path, "r");
    tlc_header h = {0};
    char stem[64], name[256], dt[16];
    int rank = 0;
    while (f && fscanf(f, "%63s %255s %15s %d", stem, name, dt, &rank) == 4) {
        for (int i = 0; i < rank; i++) fscanf(f, "%u", &h.dims[i]);
        if (!strcmp(stem, "tail")) break;
    }
    if (f) fclose(f);
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= h.dims[i];
    float *x = calloc(n, sizeof *x);  /* an all-zero feature map */
    h.type = TLC_REQUEST; h.dtype = TLC_F32; h.rank = (uint8_t)rank; h.request_id = 1;
    h.cut_id = (uint32_t)atoi(argv[2]); h.payload_len = n * sizeof *x;
    unsigned char hdr[TLC_HEADER_SIZE], reply[TLC_HEADER_SIZE];
    tlc_header_pack(&h, hdr, sizeof hdr);
    const void *out = NULL;
    size_t out_len = 0;
    rc = tlc_edge_handle(edge, hdr, sizeof hdr, x, n * sizeof *x, reply, &out, &out_len);
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
