/* Framing against the wire-protocol vectors shared with the Python tests. */
#include <stdio.h>
#include <string.h>

#include "tlcut.h"
#include "vectors.h"

static int failures = 0;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static size_t unhex(const char *s, unsigned char *out, size_t cap) {
    size_t n = strlen(s) / 2;
    for (size_t i = 0; i < n && i < cap; i++) sscanf(s + 2 * i, "%2hhx", &out[i]);
    return n;
}

int main(void) {
    unsigned char hdr[256], pay[256], packed[TLC_HEADER_SIZE];
    size_t nv = sizeof valid_vectors / sizeof valid_vectors[0], ni = sizeof invalid_vectors / sizeof invalid_vectors[0];
    for (size_t i = 0; i < nv; i++) {
        size_t hl = unhex(valid_vectors[i].header, hdr, sizeof hdr), pl = unhex(valid_vectors[i].payload, pay, sizeof pay);
        const long long *f = valid_vectors[i].f;
        tlc_header h;
        int rc = tlc_header_parse(hdr, hl, &h);
        CHECK(rc == TLC_OK, "%s: parse returned %s", valid_vectors[i].name, tlc_strerror(rc));
        CHECK(h.type == f[0] && h.request_id == (uint64_t)f[1] && h.cut_id == (uint32_t)f[2] && h.payload_len == (uint64_t)f[3],
              "%s: fields differ", valid_vectors[i].name);
        CHECK(h.flags == f[4] && h.encoding == f[5] && h.status == f[6] && h.server_us == f[7] && h.rank == f[8] && h.dtype == f[9],
              "%s: fields differ (flags..dtype)", valid_vectors[i].name);
        CHECK(tlc_frame_check(&h, pl) == TLC_OK, "%s: frame check", valid_vectors[i].name);
        CHECK(tlc_header_pack(&h, packed, sizeof packed) == TLC_OK && memcmp(packed, hdr, TLC_HEADER_SIZE) == 0,
              "%s: packing does not reproduce the vector", valid_vectors[i].name);
    }
    for (size_t i = 0; i < ni; i++) {
        size_t hl = unhex(invalid_vectors[i].header, hdr, sizeof hdr), pl = unhex(invalid_vectors[i].payload, pay, sizeof pay);
        tlc_header h;
        int rc = tlc_header_parse(hdr, hl, &h);
        if (rc == TLC_OK) rc = tlc_frame_check(&h, pl);
        CHECK(rc == invalid_vectors[i].error, "%s: got %d (%s), want %d", invalid_vectors[i].name, rc, tlc_strerror(rc),
              invalid_vectors[i].error);
    }
    /* arguments and edge cases */
    tlc_header h = {0};
    CHECK(tlc_header_parse(NULL, 80, &h) == TLC_E_INVALID_ARGUMENT, "NULL buffer");
    CHECK(tlc_header_pack(&h, packed, 10) == TLC_E_INVALID_ARGUMENT, "short buffer");
    h.type = TLC_REQUEST; h.dtype = TLC_F32; h.rank = 2; h.dims[0] = 0xFFFFFFFFu; h.dims[1] = 0xFFFFFFFFu; h.payload_len = 4;
    CHECK(tlc_frame_check(&h, 4) == TLC_E_WRONG_TENSOR, "dims that overflow must not pass");
    CHECK(strcmp(tlc_strerror(TLC_E_REPLAY), "replayed request") == 0, "strerror");
    h.rank = TLC_MAX_RANK + 1;
    CHECK(tlc_header_pack(&h, packed, sizeof packed) == TLC_E_INVALID_ARGUMENT, "rank 9 cannot be packed");
    CHECK(strcmp(tlc_strerror(TLC_E_BUNDLE), "unknown status") && strcmp(tlc_strerror(TLC_E_INSECURE), "unknown status"),
          "every status has a name");
    /* one version, from tlcut/__init__.py: the string and the macros agree */
    char v[64];
    snprintf(v, sizeof v, "%d.%d.%d", TLC_VERSION_MAJOR, TLC_VERSION_MINOR, TLC_VERSION_PATCH);
    CHECK(strcmp(tlc_version(), TLC_VERSION_STRING) == 0 && strcmp(v, TLC_VERSION_STRING) == 0, "version %s / %s / %s",
          tlc_version(), TLC_VERSION_STRING, v);
    printf("%zu valid and %zu invalid vectors: %s\n", nv, ni, failures ? "FAILED" : "ok");
    return failures != 0;
}
