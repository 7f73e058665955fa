// What the C API does not expose, tested directly: the ZAP handler's decisions, the loopback
// rule, the replay table's eviction of the least recently used connection, the table of wire
// encodings and their decoders, and the JPEG decoder's header-first refusals.
#include <zmq.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "decode/decode.hpp"
#include "internal.hpp"

static int failures = 0;
#define CHECK(c, ...)                                              \
    do {                                                           \
        if (!(c)) {                                                \
            failures++;                                            \
            std::printf("FAIL %s:%d: ", __FILE__, __LINE__);       \
            std::printf(__VA_ARGS__);                              \
            std::printf("\n");                                     \
        }                                                          \
    } while (0)

static void zap() {
    char pub[41], sec[41];
    zmq_curve_keypair(pub, sec);
    uint8_t raw[32];
    zmq_z85_decode(raw, pub);
    std::string key(reinterpret_cast<char *>(raw), 32);
    std::set<std::string> allowed = {pub};
    using V = std::vector<std::string>;

    auto d = tlc::zap_decide(V{"1.0", "7", "", "127.0.0.1", "", "CURVE", key}, allowed);
    CHECK(d.reply[0] == "1.0" && d.reply[1] == "7" && d.reply[2] == "200" && !d.refused, "listed key admitted");
    char other_pub[41], other_sec[41];
    zmq_curve_keypair(other_pub, other_sec);
    zmq_z85_decode(raw, other_pub);
    d = tlc::zap_decide(V{"1.0", "8", "", "127.0.0.1", "", "CURVE", std::string(reinterpret_cast<char *>(raw), 32)}, allowed);
    CHECK(d.reply[1] == "8" && d.reply[2] == "400" && d.refused, "unlisted key refused");
    d = tlc::zap_decide(V{"1.0", "9", "", "127.0.0.1", "", "NULL"}, allowed);
    CHECK(d.reply[2] == "400" && d.refused, "a NULL-mechanism client refused");
    d = tlc::zap_decide(V{"1.0", "10", "", "127.0.0.1", "", "CURVE", "short"}, allowed);
    CHECK(d.reply[2] == "400", "a CURVE credential of the wrong size refused");
    // malformed requests are answered too (the REP socket would stall on an unanswered one),
    // with status 500 and the request id where there is one
    for (size_t n = 0; n < 6; n++) {
        V fr = {"1.0", "11", "", "127.0.0.1", ""};
        fr.resize(n);
        d = tlc::zap_decide(fr, allowed);
        CHECK(d.reply[0] == "1.0" && d.reply[2] == "500" && !d.refused, "%zu frames: status %s", n, d.reply[2].c_str());
        CHECK(d.reply[1] == (n > 1 ? "11" : ""), "%zu frames: request id '%s'", n, d.reply[1].c_str());
    }
    d = tlc::zap_decide(V{"2.0", "12", "", "127.0.0.1", "", "CURVE", key}, allowed);
    CHECK(d.reply[2] == "500" && d.reply[1] == "12", "another ZAP version: 500");
}

static void loopback() {
    const char *yes[] = {"ipc:///tmp/x", "inproc://a", "tcp://127.0.0.1:5555", "tcp://127.1.2.3:1", "tcp://127.0.0.1",
                         "tcp://localhost:80", "tcp://localhost", "tcp://[::1]:5555"};
    const char *no[] = {"tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://10.0.0.1:5555", "tcp://127.evil.example:5555",
                        "tcp://127.0.0:5555", "tcp://localhost.example.com:80", "tcp://[::]:5555", "tcp://[::1]x",
                        "udp://127.0.0.1:5", "tcp://1270.0.0.1:5", "tcp://127.0.0.1x:5", "tcp://eth0:5555", ""};
    for (auto ep : yes) CHECK(tlc::is_loopback(ep), "%s is loopback", ep);
    for (auto ep : no) CHECK(!tlc::is_loopback(ep), "%s is not loopback", ep);
}

static void replay() {
    tlc::ReplayTable t(3);
    uint64_t last = 0;
    CHECK(t.accept("a", 5, &last) && t.accept("b", 1, &last) && t.accept("c", 1, &last), "first ids accepted");
    CHECK(!t.accept("a", 5, &last) && last == 5, "a replay refused with the last id");
    CHECK(!t.accept("a", 4, &last), "an older id refused");
    CHECK(t.accept("a", 6, &last), "a higher id accepted; a is now the most recent");  // order: b c a
    CHECK(t.accept("d", 1, &last) && t.size() == 3, "a fourth peer evicts one");       // evicts b
    CHECK(!t.accept("a", 6, &last), "a, used recently, is remembered");
    CHECK(!t.accept("c", 1, &last), "c is remembered");
    CHECK(t.accept("b", 1, &last), "b, the least recently used, was forgotten");  // evicts c (a refused replay does not count as use)
    CHECK(t.accept("c", 1, &last), "c was evicted next");
}

// Every code of tlcut.h has one row and its decoder; each restores exactly, and refuses a header
// that does not fit it with the Python edge's words.
static void encodings() {
    size_t n = 0;
    const tlc::Encoding *rows = tlc::encodings(&n);
    const char *names[] = {"raw", "float16", "int8", "uint8", "jpeg", "int8+zstd", "int4+zstd"};
    const int codes[] = {TLC_ENC_RAW, TLC_ENC_FLOAT16, TLC_ENC_INT8, TLC_ENC_UINT8, TLC_ENC_JPEG, TLC_ENC_INT8_ZSTD, TLC_ENC_INT4_ZSTD};
    CHECK(n == 7, "%zu rows", n);
    for (int i = 0; i < 7; i++) {
        const tlc::Encoding *e = tlc::find_encoding(uint8_t(codes[i]));
        CHECK(e && e->decode && std::string(e->name) == names[i], "encoding %d is %s", codes[i], names[i]);
    }
    for (size_t i = 0; i < n; i++) CHECK(tlc::find_encoding(rows[i].code) == &rows[i], "row %zu is found by its code", i);
    CHECK(!tlc::find_encoding(7) && !tlc::find_encoding(255), "no row for codes 7 and 255");

    tlc::Scratch s;
    std::string err;
    auto run = [&](tlc_header h, const void *payload, size_t len, size_t count, tlc::Tensor &t) {
        std::vector<int64_t> served = {1, 3, 7, 7};
        t = tlc::Tensor{payload, h.dtype, std::vector<int64_t>(h.dims, h.dims + h.rank)};
        err.clear();
        return tlc::decode(tlc::Wire{h, payload, len, count, served}, s, t, err);
    };
    tlc_header h{};
    h.rank = 1;
    h.dims[0] = 4;
    tlc::Tensor t{};
    // float16: 1, -2, the smallest subnormal, infinity (little-endian bytes)
    const unsigned char f16[] = {0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0x00, 0x7C};
    h.dtype = TLC_F16, h.encoding = TLC_ENC_FLOAT16;
    CHECK(run(h, f16, 8, 4, t) && t.dtype == TLC_F32, "float16: %s", err.c_str());
    const float *f = static_cast<const float *>(t.data);
    CHECK(f[0] == 1.0f && f[1] == -2.0f && f[2] == std::ldexp(1.0f, -24) && std::isinf(f[3]), "float16 values %g %g %g %g", f[0],
          f[1], f[2], f[3]);
    // int8 and uint8 affine: (q - zero_point) x scale
    const int8_t q8[] = {-128, -1, 0, 127};
    h.dtype = TLC_I8, h.encoding = TLC_ENC_INT8, h.scale = 0.5f, h.zero_point = -1;
    CHECK(run(h, q8, 4, 4, t) && t.dtype == TLC_F32, "int8: %s", err.c_str());
    f = static_cast<const float *>(t.data);
    CHECK(f[0] == -63.5f && f[1] == 0 && f[2] == 0.5f && f[3] == 64, "int8 values %g %g %g %g", f[0], f[1], f[2], f[3]);
    const uint8_t u8[] = {0, 10, 128, 255};
    h.dtype = TLC_U8, h.encoding = TLC_ENC_UINT8, h.scale = 0.25f, h.zero_point = 128;
    CHECK(run(h, u8, 4, 4, t) && t.dtype == TLC_F32, "uint8: %s", err.c_str());
    f = static_cast<const float *>(t.data);
    CHECK(f[0] == -32 && f[1] == -29.5f && f[2] == 0 && f[3] == 31.75f, "uint8 values %g %g %g %g", f[0], f[1], f[2], f[3]);
    // raw: as it came, copied only to align it
    alignas(8) unsigned char buf[17] = {};
    const float one = 1.0f;
    std::memcpy(buf + 1, &one, 4);
    h = tlc_header{};
    h.rank = 1, h.dims[0] = 4, h.dtype = TLC_F32, h.encoding = TLC_ENC_RAW;
    CHECK(run(h, buf, 16, 4, t) && t.data == buf && t.dtype == TLC_F32, "raw, aligned: as it came");
    CHECK(run(h, buf + 1, 16, 4, t) && t.data != buf + 1 && reinterpret_cast<uintptr_t>(t.data) % 8 == 0 &&
              *static_cast<const float *>(t.data) == 1.0f, "raw, unaligned: an aligned copy");
    // int8+zstd: one frame of the served [1, 3, 7, 7]'s 147 int8 values (i % 7 - 3), restored as int8 is
    uint8_t z[] = {0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x93, 0x75, 0x00, 0x00, 0x38, 0xfd, 0xfe,
                   0xff, 0x00, 0x01, 0x02, 0x03, 0x01, 0x00, 0x09, 0x51, 0xc5, 0x08};
    h = tlc_header{};
    h.rank = 1, h.dims[0] = sizeof z, h.dtype = TLC_U8, h.encoding = TLC_ENC_INT8_ZSTD, h.scale = 0.5f, h.zero_point = -3;
    if (*tlc::zstd_decoder()) {
        CHECK(run(h, z, sizeof z, sizeof z, t) && t.dtype == TLC_F32 && t.shape == std::vector<int64_t>({1, 3, 7, 7}),
              "int8+zstd: %s", err.c_str());
        f = static_cast<const float *>(t.data);
        bool same = true;
        for (int i = 0; i < 147; i++) same = same && f[i] == float(i % 7) * 0.5f;
        CHECK(same, "int8+zstd values");
        z[5] = 0x92;  // the frame header declares 146 bytes: refused before decompressing
        CHECK(!run(h, z, sizeof z, sizeof z, t) && err.find("declares 146 bytes") != std::string::npos, "%s", err.c_str());
        z[5] = 0x93;
        CHECK(!run(h, z, sizeof z - 1, sizeof z - 1, t) && err.find("does not decode") != std::string::npos, "truncated: %s", err.c_str());
        CHECK(!run(h, z, 3, 3, t) && err.find("not a zstd frame") != std::string::npos, "no header: %s", err.c_str());
        // int4+zstd: 147 values i % 16, two a byte (low nibble first), in 74 bytes
        const uint8_t z4[] = {0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x4a, 0x7d, 0x00, 0x00, 0x48, 0x10, 0x32,
                              0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x02, 0x01, 0x00, 0x9e, 0x54, 0xb8};
        h.dims[0] = sizeof z4, h.encoding = TLC_ENC_INT4_ZSTD, h.zero_point = 3;
        CHECK(run(h, z4, sizeof z4, sizeof z4, t) && t.dtype == TLC_F32 && t.shape == std::vector<int64_t>({1, 3, 7, 7}),
              "int4+zstd: %s", err.c_str());
        f = static_cast<const float *>(t.data);
        same = true;
        for (int i = 0; i < 147; i++) same = same && f[i] == (float(i % 16) - 3) * 0.5f;
        CHECK(same, "int4+zstd values");
        CHECK(!run(h, z, sizeof z, sizeof z, t) && err.find("declares 147 bytes; the tensor served takes 74") != std::string::npos,
              "int8's frame as int4: %s", err.c_str());
    } else {
        CHECK(!run(h, z, sizeof z, sizeof z, t) && err.find("without zstd support") != std::string::npos, "%s", err.c_str());
    }
    // refusals, in the Python edge's words
    struct {
        uint8_t enc, dtype, rank;
        float scale;
        const char *says;
    } bad[] = {
        {7, TLC_F32, 1, 0, "encoding 7 does not fit a float32 payload"},
        {TLC_ENC_FLOAT16, TLC_F32, 1, 0, "encoding 1 does not fit a float32 payload"},
        {TLC_ENC_INT8, TLC_I8, 1, 0, "encoding 2 does not fit a int8 payload with scale <= 0"},
        {TLC_ENC_INT8, TLC_I8, 1, NAN, "encoding 2 does not fit a int8 payload with scale nan (not finite)"},
        {TLC_ENC_INT8, TLC_I8, 1, INFINITY, "encoding 2 does not fit a int8 payload with scale inf (not finite)"},
        {TLC_ENC_UINT8, TLC_U8, 1, -INFINITY, "encoding 3 does not fit a uint8 payload with scale -inf (not finite)"},
        {TLC_ENC_JPEG, TLC_U8, 1, INFINITY, "encoding 4 does not fit a uint8 payload with scale inf (not finite)"},
        {TLC_ENC_INT8, TLC_U8, 1, 1, "encoding 2 does not fit a uint8 payload"},
        {TLC_ENC_UINT8, TLC_U8, 1, -1, "encoding 3 does not fit a uint8 payload with scale <= 0"},
        {TLC_ENC_JPEG, TLC_U8, 2, 0, "encoding 4 does not fit a uint8 payload with dims [2, 2]; a JPEG is sent as dims [payload_len]"},
        {TLC_ENC_JPEG, TLC_U8, 1, 0, "encoding 4 does not fit a uint8 payload with scale <= 0"},
        {TLC_ENC_JPEG, TLC_I8, 1, 1, "encoding 4 does not fit a int8 payload"},
        {TLC_ENC_INT8_ZSTD, TLC_I8, 1, 1, "encoding 5 does not fit a int8 payload"},
        {TLC_ENC_INT8_ZSTD, TLC_U8, 2, 1, "encoding 5 does not fit a uint8 payload with dims [2, 2]; a zstd frame is sent as dims [payload_len]"},
        {TLC_ENC_INT8_ZSTD, TLC_U8, 1, NAN, "encoding 5 does not fit a uint8 payload with scale nan (not finite)"},
        {TLC_ENC_INT4_ZSTD, TLC_U8, 1, INFINITY, "encoding 6 does not fit a uint8 payload with scale inf (not finite)"},
        {TLC_ENC_INT4_ZSTD, TLC_F32, 1, 1, "encoding 6 does not fit a float32 payload"},
        {TLC_ENC_INT4_ZSTD, TLC_U8, 1, 0, "encoding 6 does not fit a uint8 payload with scale <= 0"},
    };
    for (auto &b : bad) {
        h = tlc_header{};
        h.encoding = b.enc, h.dtype = b.dtype, h.rank = b.rank, h.scale = b.scale, h.dims[0] = 2, h.dims[1] = 2;
        CHECK(!run(h, buf, 4, 4, t) && err == b.says, "encoding %d: '%s', expected '%s'", b.enc, err.c_str(), b.says);
    }
    // a finite scale whose zero point takes the restore past float32's range (messages as the Python edge's)
    struct {
        uint8_t enc, dtype, rank;
        float scale;
        int32_t zp;
        const char *says;
    } far[] = {
        {TLC_ENC_INT8, TLC_I8, 2, 1e38f, 2147483647, "encoding 2 does not fit a int8 payload with scale 1e+38 and zero point 2147483647: it restores to 2.14748e+47, past float32's range"},
        {TLC_ENC_UINT8, TLC_U8, 2, 2e36f, -1000, "encoding 3 does not fit a uint8 payload with scale 2e+36 and zero point -1000: it restores to 2.51e+39, past float32's range"},
        {TLC_ENC_INT4_ZSTD, TLC_U8, 1, 1e37f, 100, "encoding 6 does not fit a uint8 payload with scale 1e+37 and zero point 100: it restores to 1e+39, past float32's range"},
        {TLC_ENC_JPEG, TLC_U8, 1, 1e37f, INT32_MIN, "encoding 4 does not fit a uint8 payload with scale 1e+37 and zero point -2147483648: it restores to 2.14748e+46, past float32's range"},
    };
    for (auto &b : far) {
        h = tlc_header{};
        h.encoding = b.enc, h.dtype = b.dtype, h.rank = b.rank, h.scale = b.scale, h.zero_point = b.zp, h.dims[0] = 2,
        h.dims[1] = 2;
        CHECK(!run(h, buf, 4, 4, t) && err == b.says, "encoding %d: '%s', expected '%s'", b.enc, err.c_str(), b.says);
    }
    // just inside the range: restored, every value finite
    h = tlc_header{};
    h.encoding = TLC_ENC_INT8, h.dtype = TLC_I8, h.rank = 2, h.scale = 1e36f, h.zero_point = 0, h.dims[0] = 2, h.dims[1] = 2;
    {
        const int8_t q[4] = {-128, 127, 0, 1};
        CHECK(run(h, q, 4, 4, t) && t.dtype == TLC_F32, "int8 at scale 1e36: %s", err.c_str());
        const float *f = static_cast<const float *>(t.data);
        CHECK(std::isfinite(f[0]) && f[0] < -1.2e38f && std::isfinite(f[1]) && f[1] > 1.2e38f, "int8 at scale 1e36 restores finite");
    }
}

static std::vector<uint8_t> seed(const char *name) {
    std::ifstream f(std::string(TLCUT_JPEG_SEEDS) + "/" + name, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// False where libtlcut was built without a JPEG decoder: only the refusal could be checked.
static bool jpeg() {
    std::vector<uint8_t> jpg = seed("rgb7-q90.jpg"), out;
    std::string err;
    CHECK(jpg.size() > 100, "seed rgb7-q90.jpg not found under %s", TLCUT_JPEG_SEEDS);
    if (!*tlc::jpeg_decoder()) {  // built without libturbojpeg: every JPEG is refused, saying so
        CHECK(!tlc::jpeg_decode(jpg.data(), jpg.size(), 7, 7, 3, out, err) && err.find("without JPEG support") != std::string::npos,
              "%s", err.c_str());
        return false;
    }
    int h = 0, w = 0, c = 0;
    CHECK(tlc::jpeg_header(jpg.data(), jpg.size(), &h, &w, &c, err) && h == 7 && w == 7 && c == 3, "header %dx%dx%d", h, w, c);
    CHECK(tlc::jpeg_decode(jpg.data(), jpg.size(), 7, 7, 3, out, err) && out.size() == 147, "decode: %s", err.c_str());
    out.clear();
    CHECK(!tlc::jpeg_decode(jpg.data(), jpg.size(), 8, 7, 3, out, err) && out.empty() &&
              err.find("decodes to 7x7 with 3 component(s); the input served takes 8x7 with 3") != std::string::npos,
          "another size: %s", err.c_str());
    CHECK(!tlc::jpeg_decode(jpg.data(), jpg.size(), 7, 7, 1, out, err) && out.empty(), "RGB to a grayscale input");
    // a hostile frame header: 65500 x 65500 is read, and refused before anything is allocated
    std::vector<uint8_t> big = jpg;
    for (size_t i = 0; i + 9 < big.size(); i++)
        if (big[i] == 0xFF && big[i + 1] == 0xC0) {
            big[i + 5] = big[i + 7] = 0xFF, big[i + 6] = big[i + 8] = 0xDC;
            break;
        }
    CHECK(tlc::jpeg_header(big.data(), big.size(), &h, &w, &c, err) && h == 65500 && w == 65500, "hostile header %dx%d", h, w);
    CHECK(!tlc::jpeg_decode(big.data(), big.size(), 7, 7, 3, out, err) && out.empty() &&
              err.find("65500x65500") != std::string::npos, "hostile: %s", err.c_str());
    std::vector<uint8_t> cut(jpg.begin(), jpg.end() - 40), tables = seed("regress-tables-only.jpg");
    CHECK(!tlc::jpeg_decode(cut.data(), cut.size(), 7, 7, 3, out, err) && err.find("Premature end") != std::string::npos,
          "truncated: %s", err.c_str());
    CHECK(!tlc::jpeg_header(tables.data(), tables.size(), &h, &w, &c, err), "a stream of tables only has no image");
    CHECK(!tlc::jpeg_decode(nullptr, 0, 7, 7, 3, out, err) && err.find('\n') == std::string::npos, "empty: %s", err.c_str());
    return true;
}

// Usage: test_internal [jpeg]: without "jpeg", the ZAP, loopback, replay and encoding-table
// suites; with it, the JPEG decoder's, which exits 77 (ctest: skipped) with the reason where
// libtlcut was built without libturbojpeg, once the refusal that such a build gives is checked.
int main(int argc, char **argv) {
    if (argc > 1 && std::string(argv[1]) == "jpeg") {
        bool decoder = jpeg();
        std::printf("jpeg: %s\n", failures ? "FAILED" : decoder ? "ok" : "refused, as a build without a decoder must");
        if (failures) return 1;
        if (!decoder) {
            std::printf("SKIPPED: libtlcut was built without libturbojpeg (Debian: libturbojpeg0-dev), so no JPEG is decoded\n");
            return 77;
        }
        return 0;
    }
    zap();
    loopback();
    replay();
    encodings();
    std::printf("internal: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
