// The edge handle and what its parts share: edge.cpp (the handle's settings), manifest.cpp (the
// bundle's manifest and the halves it lists), security.cpp (CURVE, ZAP, the loopback rule, replay
// protection), handle.cpp (the request handler), serve.cpp (the ZeroMQ loop) and decode/ (the wire
// encodings). Not part of the C API (tlcut.h).
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "decode/decode.hpp"
#include "engine.hpp"
#include "internal.hpp"
#include "tlcut.h"

namespace tlc {

// One served half: a tail, or the whole model.
struct Half {
    std::string what;              // "cut 3", "cut 3 + TL", "the whole model" (as the Python edge says it)
    std::string file;              // relative to the bundle, for messages
    int dtype = TLC_F32;           // of the input, from the manifest
    std::vector<int64_t> shape;    // of the input, from the manifest
    std::unique_ptr<Engine> engine;
};

// A cut as the manifest lists it: what --cut may name, and whether the TL applies there.
struct CutInfo {
    uint64_t index = 0;
    std::string tensor, layer, why_no_tl;
    bool tl = false;
};

// One frame of a message (data may be NULL for an empty frame).
struct Frame {
    const void *data;
    size_t size;
};

}  // namespace tlc

struct tlc_edge {
    std::string dir;
    nlohmann::json artifacts = nlohmann::json::array();
    std::vector<tlc::CutInfo> cuts;
    std::unique_ptr<tlc::Runtime> runtime;                 // made by the first tlc_edge_add_cut; outlives the halves
    std::map<std::pair<uint32_t, int>, tlc::Half> halves;  // (cut_id, TL flag) -> half
    tlc::Options engine_options;
    std::string precision = "float32";  // of the artifacts tlc_edge_add_cut loads
    size_t max_message = size_t(256) << 20;
    std::string error;
    std::string reply_text;
    tlc::Scratch scratch;  // the decoders' buffers
    tlc_edge_stats stats{};
    tlc::ReplayTable replay{TLC_REPLAY_TABLE};
    tlc_log_fn log = nullptr;
    void *log_user = nullptr;
    std::mutex log_mu;  // the ZAP thread and the serve loop both log
    bool curve = false, insecure = false;
    uint8_t secret[32] = {};
    std::set<std::string> allowed;  // Z85 public keys
    std::atomic<uint64_t> denied{0};
};

namespace tlc {

// Why this thread's last tlc_edge_create failed (tlc_edge_last_error(NULL)).
extern thread_local std::string create_error;

// ``msg`` as the edge's last error (where there is an edge); returns ``code``.
int fail(tlc_edge *e, int code, const std::string &msg);
// One line to the log callback, if one is set; serialized across threads.
void emit(tlc_edge *e, const std::string &line);
// What a (cut, flags) pair names, in the Python edge's words: "cut 3 + TL", "band 0 of the input".
std::string what(uint32_t cut, uint16_t flags);

// Answer one message: ``fr`` its first frames (at most 2 are looked at), ``nfr`` how many it had,
// ``bytes`` their total size, ``peer`` the connection (empty: no replay check). Always a reply:
// 80 bytes into ``rh``, the payload at ``*rp`` (the edge's memory or the engine's).
void answer(tlc_edge *e, const std::string &peer, const Frame *fr, size_t nfr, size_t bytes, unsigned char *rh,
            const void **rp, size_t *rpl);

// The ZAP (RFC 27) handler thread of a CURVE edge, on the bound ``zap`` REP socket, until *stop.
void zap_loop(void *zap, tlc_edge *e, std::atomic<bool> *stop);

}  // namespace tlc
