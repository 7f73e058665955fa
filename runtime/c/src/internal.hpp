// Pieces of the C edge that are not part of the C API but are tested on their own
// (runtime/c/tests/test_internal.cpp links the static library, where they are visible).
#pragma once
#include <array>
#include <cstdint>
#include <list>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tlc {

// The numpy name of a protocol dtype code (the table of docs/protocol.md), ``unknown`` for others.
const char *dtype_name(int dtype, const char *unknown = "?");

// A shape as the Python edge prints it in messages: "[1, 4, 7, 7]".
std::string dims_str(const std::vector<int64_t> &shape);

// The answer of a ZAP handler (ZeroMQ RFC 27) to one request, and whether it refused a client.
struct ZapDecision {
    std::array<std::string, 6> reply;  // version, request id, status code, status text, user id, metadata
    bool refused = false;              // a well-formed request for a key that is not admitted
};

// Decide a ZAP request (its frames as received): 200 for a CURVE client whose public key (Z85) is
// in ``allowed``, 400 for any other client, 500 for a request that is not a ZAP 1.0 request of at
// least six frames. Every request gets an answer: the ZAP socket is a REP socket, and one left
// unanswered would stall every later handshake.
ZapDecision zap_decide(const std::vector<std::string> &request, const std::set<std::string> &allowed);

// Whether a ZeroMQ endpoint stays on this machine: ipc://, inproc://, tcp://127.x.x.x,
// tcp://localhost and tcp://[::1] (the rule of runtime/security.py is_loopback).
bool is_loopback(const std::string &endpoint);
// Why plain TCP on ``endpoint`` is refused, naming the loopback endpoint to try it on one machine;
// for an endpoint without a transport (no "://"), that (the messages of runtime/security.py).
std::string plain_tcp_refusal(const std::string &endpoint);

// The last accepted request id of up to ``capacity`` connections; past that the one that sent
// least recently is forgotten (as the Python edge's OrderedDict).
class ReplayTable {
  public:
    explicit ReplayTable(size_t capacity) : capacity_(capacity) {}
    // True and the id recorded (the peer becomes the most recent) if ``rid`` is above the last id
    // accepted from ``peer``; false and that last id in ``*last`` if not (nothing changes).
    bool accept(const std::string &peer, uint64_t rid, uint64_t *last);
    size_t size() const { return index_.size(); }

  private:
    using Entry = std::pair<std::string, uint64_t>;
    size_t capacity_;
    std::list<Entry> order_;  // least recent first
    std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

// The JPEG decoder libtlcut was built with, e.g. "libjpeg-turbo 2.1.5", or "" for none.
const char *jpeg_decoder();

// (height, width, components) a JPEG's header declares, read without decoding anything; false
// and a one-line reason in ``err`` where the header does not parse (or there is no decoder).
bool jpeg_header(const void *data, size_t len, int *h, int *w, int *c, std::string &err);

// Decode a JPEG into ``out`` as h x w x c bytes (HWC; c 1: grayscale, 3: RGB). The header is read
// first and a JPEG that declares another size or component count is refused before anything is
// allocated or decoded; a corrupt or truncated one (any libjpeg warning included) is refused too.
// False and a one-line reason in ``err`` on every failure.
bool jpeg_decode(const void *data, size_t len, int h, int w, int c, std::vector<uint8_t> &out, std::string &err);

}  // namespace tlc
