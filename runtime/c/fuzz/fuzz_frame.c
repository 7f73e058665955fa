/* libFuzzer target: the frame parser and checker on arbitrary bytes (first 80 as the header,
 * the rest as the payload), and pack-after-parse must reproduce what was parsed. */
#include <string.h>

#include "tlcut.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    tlc_header h;
    size_t hl = size < TLC_HEADER_SIZE ? size : TLC_HEADER_SIZE;
    if (tlc_header_parse(data, hl, &h) == TLC_OK) {
        (void)tlc_frame_check(&h, size - hl);
        unsigned char out[TLC_HEADER_SIZE];
        if (tlc_header_pack(&h, out, sizeof out) == TLC_OK) {
            tlc_header h2;
            if (tlc_header_parse(out, sizeof out, &h2) != TLC_OK || h2.request_id != h.request_id ||
                h2.payload_len != h.payload_len || h2.rank != h.rank)
                __builtin_trap();
        }
    }
    return 0;
}
