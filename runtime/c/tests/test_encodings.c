/* Wire encodings through the whole handler, on the committed test bundle's cut 1: float16 and int8
 * affine requests answer as the float32 tensor they restore to, within the encoding's own error of
 * the float32 answer, and move with the input (the decoders alone: test_internal.cpp).
 * Usage: test_encodings DATA_DIR */
#include "edge_test.h"

/* The nearest float16 (round half to even), as numpy's astype(float16) for values in its range. */
static uint16_t float_to_half(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    float a = fabsf(f);
    if (a < ldexpf(1, -14)) return sign | (uint16_t)lrintf(ldexpf(a, 24)); /* subnormal: units of 2^-24 */
    int ex;
    long man = lrintf((frexpf(a, &ex) * 2 - 1) * 1024); /* a = (1 + man/1024) x 2^(ex-1) */
    int biased = ex - 1 + 15;
    if (man == 1024) man = 0, biased++;
    return biased >= 31 ? sign | 0x7c00 : sign | (uint16_t)(biased << 10) | (uint16_t)man;
}

/* The largest |a - b|; infinity where either holds a NaN (fmaxf would skip it). */
static float max_diff(const float *a, const float *b, int n) {
    float m = 0;
    for (int i = 0; i < n; i++) m = isnan(a[i] - b[i]) ? INFINITY : fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

/* The float32 result of cut 1 for ``x``, into ``y`` (4 floats); false if none came. */
static int result_f32(tlc_edge *e, tlc_header h, const void *payload, size_t len, float *y) {
    reply r = ask(e, h, payload, len, TLC_HEADER_SIZE);
    if (r.r.type != TLC_RESULT || r.r.dtype != TLC_F32 || r.len != 16) return 0;
    memcpy(y, r.out, 16);
    return 1;
}

/* float16 and int8 affine requests of two inputs: each answer equals the float32 answer to the
 * tensor the encoding restores (the test restores it too), is within the encoding's own error of
 * the float32 answer to the input itself, and moves with the input. */
static void encoded_requests(tlc_edge *e, const float *in) {
    uint32_t d[4] = {1, 4, 7, 7};
    float x[2][196], back[196], ref[2][4], got16[2][4], got8[2][4], exact[4];
    uint16_t h16[196];
    int8_t q8[196];
    for (int i = 0; i < 196; i++) x[0][i] = in[i], x[1][i] = in[195 - i];
    for (int k = 0; k < 2; k++) {
        CHECK(result_f32(e, req(1, 0, d, 4, 196 * 4), x[k], 196 * 4, ref[k]), "float32 request %d", k);
        float scale_ref = 1e-3f;
        for (int i = 0; i < 4; i++) scale_ref = fmaxf(scale_ref, fabsf(ref[k][i]));

        tlc_header h = req(1, 0, d, 4, 196 * 2);
        h.dtype = TLC_F16; h.encoding = TLC_ENC_FLOAT16;
        for (int i = 0; i < 196; i++) h16[i] = float_to_half(x[k][i]), back[i] = half_to_float(h16[i]);
        CHECK(result_f32(e, h, h16, 196 * 2, got16[k]), "float16 request %d", k);
        CHECK(result_f32(e, req(1, 0, d, 4, 196 * 4), back, 196 * 4, exact) && max_diff(got16[k], exact, 4) <= 1e-4f,
              "float16 %d: %g from the float32 answer to the float16 values", k, max_diff(got16[k], exact, 4));
        /* float16 keeps 11 significant bits: the input moves by at most 2^-11 of itself */
        CHECK(max_diff(got16[k], ref[k], 4) <= 1e-3f * scale_ref, "float16 %d: %g from the float32 answer (largest %g)", k,
              max_diff(got16[k], ref[k], 4), scale_ref);

        /* int8 affine over the input's range: zero_point is not 0, each value within scale/2 */
        float lo = x[k][0], hi = x[k][0];
        for (int i = 0; i < 196; i++) lo = fminf(lo, x[k][i]), hi = fmaxf(hi, x[k][i]);
        h = req(1, 0, d, 4, 196);
        h.dtype = TLC_I8; h.encoding = TLC_ENC_INT8; h.scale = (hi - lo) / 255; h.zero_point = (int32_t)lrintf(-128 - lo / h.scale);
        for (int i = 0; i < 196; i++) {
            long q = lrintf(x[k][i] / h.scale) + h.zero_point;
            q8[i] = (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
            back[i] = ((float)q8[i] - (float)h.zero_point) * h.scale;
        }
        CHECK(result_f32(e, h, q8, 196, got8[k]), "int8 request %d", k);
        CHECK(result_f32(e, req(1, 0, d, 4, 196 * 4), back, 196 * 4, exact) && max_diff(got8[k], exact, 4) <= 1e-4f,
              "int8 %d: %g from the float32 answer to the restored values", k, max_diff(got8[k], exact, 4));
        CHECK(max_diff(got8[k], ref[k], 4) <= 1e-2f * scale_ref, "int8 %d: %g from the float32 answer (largest %g)", k,
              max_diff(got8[k], ref[k], 4), scale_ref);
        printf("encodings %d: float16 %g, int8 %g from float32 (largest %g)\n", k, max_diff(got16[k], ref[k], 4),
               max_diff(got8[k], ref[k], 4), scale_ref);
    }
    CHECK(max_diff(ref[0], ref[1], 4) > 1e-3f, "the float32 answer moves with the input");
    CHECK(max_diff(got16[0], got16[1], 4) > 1e-3f && max_diff(got8[0], got8[1], 4) > 1e-3f,
          "the float16 and int8 answers move with the input");
}

int main(int argc, char **argv) {
    if (argc != 2) { printf("usage: test_encodings DATA_DIR\n"); return 2; }
    data = argv[1];
    tlc_edge *e = open_edge("bundle");
    CHECK(tlc_edge_add_cut(e, "1", 0) == TLC_OK, "cut 1: %s", tlc_edge_last_error(e));
    float *in = load("cut1_in.f32", 196 * 4);
    encoded_requests(e, in);
    free(in);
    tlc_edge_destroy(e);
    printf("encodings: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
