// What the C API does not expose, tested directly: the ZAP handler's decisions, the loopback
// rule, the replay table's eviction of the least recently used connection, and the JPEG decoder's
// header-first refusals.
#include <zmq.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

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

static std::vector<uint8_t> seed(const char *name) {
    std::ifstream f(std::string(TLCUT_JPEG_SEEDS) + "/" + name, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

static void jpeg() {
    std::vector<uint8_t> jpg = seed("rgb7-q90.jpg"), out;
    std::string err;
    CHECK(jpg.size() > 100, "seed rgb7-q90.jpg not found under %s", TLCUT_JPEG_SEEDS);
    if (!*tlc::jpeg_decoder()) {  // built without libturbojpeg: every JPEG is refused, saying so
        CHECK(!tlc::jpeg_decode(jpg.data(), jpg.size(), 7, 7, 3, out, err) && err.find("without JPEG support") != std::string::npos,
              "%s", err.c_str());
        return;
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
}

int main() {
    zap();
    loopback();
    replay();
    jpeg();
    std::printf("internal: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
