// The C edge: tails of a bundle behind the engine boundary, the request handler, the ZeroMQ loop.
// It answers exactly as runtime/serve.py does: the same checks in the same order, the same codes.
#include <zmq.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>
#include <thread>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine.hpp"
#include "tlcut.h"

namespace {

struct Half {
    std::string input;
    int dtype = TLC_F32;
    std::vector<int> shape;
    std::unique_ptr<tlc::Engine> engine;
};

int dtype_code(const std::string &s) {
    static const std::map<std::string, int> m = {{"float32", TLC_F32}, {"float16", TLC_F16}, {"int8", TLC_I8},
                                                 {"uint8", TLC_U8},    {"int32", TLC_I32},   {"int64", TLC_I64},
                                                 {"float64", TLC_F64}};
    auto it = m.find(s);
    return it == m.end() ? 0 : it->second;
}

const char *dtype_name(int d) {
    switch (d) {
    case TLC_F32: return "float32";
    case TLC_F16: return "float16";
    case TLC_I8: return "int8";
    case TLC_U8: return "uint8";
    case TLC_I32: return "int32";
    case TLC_I64: return "int64";
    case TLC_F64: return "float64";
    default: return "?";
    }
}

float half_to_float(uint16_t h) {
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, f;
    if (exp == 0) {
        if (man == 0) {
            f = sign;
        } else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) { man <<= 1; exp--; }
            f = sign | exp << 23 | (man & 0x3ffu) << 13;
        }
    } else if (exp == 31) {
        f = sign | 0x7f800000u | man << 13;
    } else {
        f = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}

std::string shape_str(int dtype, const std::vector<int> &s) {
    std::ostringstream o;
    o << dtype_name(dtype) << "[";
    for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
    o << "]";
    return o.str();
}

}  // namespace

struct tlc_edge {
    std::string dir;
    std::map<std::pair<uint32_t, int>, Half> halves;  // (cut_id, TL flag) -> half
    size_t max_message = size_t(256) << 20;
    std::string error;
    std::string reply_text;
    std::vector<float> in, out;
    tlc_edge_stats stats{};
    std::unordered_map<std::string, uint64_t> last_rid;
    tlc_log_fn log = nullptr;
    void *log_user = nullptr;
    bool curve = false;
    std::string public_z85, secret_z85;
    std::set<std::string> allowed;  // Z85 public keys
    uint64_t denied = 0;
};

static int fail(tlc_edge *e, int code, const std::string &msg) {
    if (e) e->error = msg;
    return code;
}

// io.txt lines: "<part> <input name> <dtype> <rank> <dims...>" (docs/bundle.md)
static bool read_io(const std::string &file, const std::string &part, Half &h) {
    std::ifstream f(file);
    std::string line;
    while (std::getline(f, line)) {
        std::istringstream ss(line);
        std::string p, name, dt;
        int rank = 0;
        if (!(ss >> p >> name >> dt >> rank) || p != part) continue;
        h.input = name;
        h.dtype = dtype_code(dt);
        h.shape.assign(rank, 0);
        for (int i = 0; i < rank; i++) ss >> h.shape[i];
        return bool(ss) && h.dtype != 0;
    }
    return false;
}

extern "C" {

int tlc_edge_create(const char *bundle_dir, tlc_edge **out) {
    if (!bundle_dir || !out) return TLC_E_INVALID_ARGUMENT;
    *out = nullptr;
    std::ifstream mf(std::string(bundle_dir) + "/manifest.json");
    if (!mf) return TLC_E_NOT_FOUND;
    auto *e = new (std::nothrow) tlc_edge();
    if (!e) return TLC_E_NO_MEMORY;
    e->dir = bundle_dir;
    *out = e;
    return TLC_OK;
}

void tlc_edge_destroy(tlc_edge *e) { delete e; }

const char *tlc_edge_last_error(const tlc_edge *e) { return e ? e->error.c_str() : ""; }

int tlc_edge_set_max_message(tlc_edge *e, size_t bytes) {
    if (!e || bytes < TLC_HEADER_SIZE) return TLC_E_INVALID_ARGUMENT;
    e->max_message = bytes;
    return TLC_OK;
}

// A ZeroMQ certificate file: lines `public-key = "<40 Z85 chars>"` and `secret-key = "..."`.
static std::string cert_value(const std::string &file, const std::string &key) {
    std::ifstream f(file);
    std::string line;
    while (std::getline(f, line)) {
        auto k = line.find(key);
        auto q1 = line.find('"'), q2 = line.rfind('"');
        if (k != std::string::npos && q1 != std::string::npos && q2 > q1 && q2 - q1 - 1 == 40)
            return line.substr(q1 + 1, 40);
    }
    return "";
}

int tlc_edge_set_curve(tlc_edge *e, const char *secret_file, const char *allow_dir) {
    if (!e || !secret_file || !allow_dir) return TLC_E_INVALID_ARGUMENT;
    if (!zmq_has("curve")) return fail(e, TLC_E_TRANSPORT, "this libzmq was built without CURVE");
    std::string pub = cert_value(secret_file, "public-key"), sec = cert_value(secret_file, "secret-key");
    if (sec.empty() || pub.empty())
        return fail(e, TLC_E_NOT_FOUND, std::string("'") + secret_file + "' is not a CURVE secret key file (NAME.key_secret from `tlcut keys`)");
    std::set<std::string> allowed;
    std::error_code ec;
    for (auto &entry : std::filesystem::directory_iterator(allow_dir, ec))
        if (entry.path().extension() == ".key") {
            std::string k = cert_value(entry.path().string(), "public-key");
            if (!k.empty()) allowed.insert(k);
        }
    if (ec) return fail(e, TLC_E_NOT_FOUND, std::string("--allow folder '") + allow_dir + "' cannot be read");
    if (allowed.empty()) return fail(e, TLC_E_NOT_FOUND, std::string("--allow folder '") + allow_dir + "' holds no public keys (*.key); no device could connect");
    e->curve = true;
    e->public_z85 = pub;
    e->secret_z85 = sec;
    e->allowed = std::move(allowed);
    return TLC_OK;
}

// ZAP (RFC 27) handler: admit a CURVE client only if its public key is in the allow-list.
static void zap_loop(void *ctx, tlc_edge *e, std::atomic<bool> *stop, std::atomic<bool> *ready) {
    void *zap = zmq_socket(ctx, ZMQ_REP);
    int zero = 0;
    zmq_setsockopt(zap, ZMQ_LINGER, &zero, sizeof zero);
    zmq_bind(zap, "inproc://zeromq.zap.01");
    ready->store(true);
    while (!stop->load()) {
        zmq_pollitem_t it = {zap, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        std::vector<std::string> fr;
        int more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, zap, 0) < 0) { zmq_msg_close(&m); break; }
            fr.emplace_back(static_cast<char *>(zmq_msg_data(&m)), zmq_msg_size(&m));
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
        if (fr.size() < 6) continue;
        bool ok = false;
        if (fr[5] == "CURVE" && fr.size() >= 7 && fr[6].size() == 32) {
            char z85[41];
            zmq_z85_encode(z85, reinterpret_cast<const uint8_t *>(fr[6].data()), 32);
            ok = e->allowed.count(std::string(z85, 40)) > 0;
        }
        if (!ok) {
            e->denied++;
            if (e->log) e->log(e->log_user, "connection refused: its CURVE key is not in the allow-list");
        }
        const std::string reply[6] = {"1.0", fr[1], ok ? "200" : "400", ok ? "OK" : "key not allowed", "", ""};
        for (int i = 0; i < 6; i++) zmq_send(zap, reply[i].data(), reply[i].size(), i < 5 ? ZMQ_SNDMORE : 0);
    }
    zmq_close(zap);
}

int tlc_edge_set_log(tlc_edge *e, tlc_log_fn fn, void *user) {
    if (!e) return TLC_E_INVALID_ARGUMENT;
    e->log = fn;
    e->log_user = user;
    return TLC_OK;
}

int tlc_edge_stats_get(const tlc_edge *e, tlc_edge_stats *out) {
    if (!e || !out) return TLC_E_INVALID_ARGUMENT;
    *out = e->stats;
    return TLC_OK;
}

int tlc_edge_add_cut(tlc_edge *e, const char *cut, int tl) {
    if (!e || !cut || tl < -1 || tl > 1) return TLC_E_INVALID_ARGUMENT;
    std::vector<std::pair<std::string, int>> parts;  // (file stem, TL flag)
    std::string dir, io;
    uint32_t cut_id;
    if (std::strcmp(cut, "input") == 0) {
        cut_id = TLC_INPUT_CUT;
        dir = e->dir;
        io = dir + "/io.txt";
        parts.push_back({"model", 0});
    } else {
        char *end = nullptr;
        unsigned long k = std::strtoul(cut, &end, 10);
        if (!*cut || *end || k >= TLC_INPUT_CUT) return fail(e, TLC_E_INVALID_ARGUMENT, std::string("cut '") + cut + "' is not a cut index or 'input'");
        cut_id = uint32_t(k);
        dir = e->dir + "/halves/" + cut;
        io = dir + "/io.txt";
        if (tl != 1) parts.push_back({"tail", 0});
        if (tl != 0) parts.push_back({"tail_tl", TLC_FLAG_TL});
    }
    int loaded = 0;
    for (auto &[stem, flag] : parts) {
        Half h;
        if (!read_io(io, stem, h)) {
            if (tl == -1 && flag) continue;  // "both": the TL tail where it was compiled
            return fail(e, TLC_E_NOT_FOUND, "cut " + std::string(cut) + " has no compiled " + stem + " (" + io +
                                                "); run `tlcut compile BUNDLE --cuts " + cut + "` first");
        }
        std::string err;
        h.engine = tlc::make_engine(dir + "/" + stem + ".onnx", err);
        if (!h.engine) return fail(e, TLC_E_ENGINE, err);
        e->halves[{cut_id, flag}] = std::move(h);
        loaded++;
    }
    return loaded ? TLC_OK : fail(e, TLC_E_NOT_FOUND, std::string("nothing to serve for cut ") + cut);
}

}  // extern "C"

// The handler. ``peer`` (may be empty) is the connection identity, for replay refusal.
static int handle(tlc_edge *e, const std::string &peer, const void *hbuf, size_t hlen, const void *payload,
                  size_t plen, unsigned char *rh, const void **rp, size_t *rpl) {
    auto t0 = std::chrono::steady_clock::now();
    tlc_header h{}, r{};
    uint64_t rid = 0;
    uint32_t cut = TLC_INPUT_CUT;
    uint16_t flags = 0;
    int code = TLC_OK;
    std::string msg;
    e->stats.messages++;
    do {
        if (hlen + plen > e->max_message) {
            code = TLC_E_TOO_LARGE;
            msg = "message of " + std::to_string(hlen + plen) + " bytes exceeds this edge's limit of " +
                  std::to_string(e->max_message);
            break;
        }
        code = tlc_header_parse(hbuf, hlen, &h);
        if (code) {
            msg = hlen != TLC_HEADER_SIZE ? "header is " + std::to_string(hlen) + " bytes, expected 80"
                                          : std::string("bad header: ") + tlc_strerror(code);
            break;
        }
        rid = h.request_id, cut = h.cut_id, flags = h.flags;
        code = tlc_frame_check(&h, plen);
        if (code) {
            msg = code == TLC_E_BAD_FRAME ? "payload is " + std::to_string(plen) + " bytes, header says " + std::to_string(h.payload_len)
                                          : "dims disagree with the payload length";
            break;
        }
        if (h.type == TLC_PING) {
            e->stats.pings++;
            r.type = TLC_PONG;
            r.request_id = rid;
            r.cut_id = TLC_INPUT_CUT;
            tlc_header_pack(&r, rh, TLC_HEADER_SIZE);
            *rp = nullptr;
            *rpl = 0;
            return TLC_OK;
        }
        if (h.type != TLC_REQUEST) {
            code = TLC_E_BAD_TYPE;
            msg = "an edge takes REQUEST or PING";
            break;
        }
        if (!peer.empty()) {
            auto it = e->last_rid.find(peer);
            if (it != e->last_rid.end() && rid <= it->second) {
                code = TLC_E_REPLAY;
                msg = "request id " + std::to_string(rid) + " is not above " + std::to_string(it->second);
                break;
            }
            if (e->last_rid.size() > 4096) e->last_rid.clear();
            e->last_rid[peer] = rid;
        }
        auto hit = e->halves.find({cut, flags & TLC_FLAG_TL});
        if (hit == e->halves.end()) {
            code = TLC_E_WRONG_CUT;
            msg = "this edge does not serve cut " + std::to_string(cut) + ((flags & TLC_FLAG_TL) ? " + TL" : "");
            break;
        }
        Half &half = hit->second;
        std::vector<int> got(h.dims, h.dims + h.rank);
        size_t n = 1;
        for (int d : got) n *= size_t(d);
        // restore the payload to float32 (the halves tlcut compiles take float32)
        const float *x = nullptr;
        if (h.encoding == TLC_ENC_RAW && h.dtype == TLC_F32) {
            if (reinterpret_cast<uintptr_t>(payload) % alignof(float)) {
                e->in.resize(n);
                std::memcpy(e->in.data(), payload, n * 4);
                x = e->in.data();
            } else {
                x = static_cast<const float *>(payload);
            }
        } else if (h.encoding == TLC_ENC_FLOAT16 && h.dtype == TLC_F16) {
            e->in.resize(n);
            const unsigned char *p = static_cast<const unsigned char *>(payload);
            for (size_t i = 0; i < n; i++) e->in[i] = half_to_float(uint16_t(p[2 * i] | p[2 * i + 1] << 8));
            x = e->in.data();
        } else if (h.encoding == TLC_ENC_INT8 && h.dtype == TLC_I8 && h.scale > 0) {
            e->in.resize(n);
            const int8_t *p = static_cast<const int8_t *>(payload);
            for (size_t i = 0; i < n; i++) e->in[i] = (float(p[i]) - float(h.zero_point)) * h.scale;
            x = e->in.data();
        } else if (h.encoding != TLC_ENC_RAW) {
            code = TLC_E_WRONG_TENSOR;
            msg = "encoding " + std::to_string(h.encoding) + " does not fit a " + dtype_name(h.dtype) + " payload";
            break;
        }
        int in_dtype = h.encoding == TLC_ENC_RAW ? int(h.dtype) : int(TLC_F32);
        if (in_dtype != half.dtype || got != half.shape) {
            code = TLC_E_WRONG_TENSOR;
            msg = "cut takes " + shape_str(half.dtype, half.shape) + ", got " + shape_str(in_dtype, got);
            break;
        }
        std::vector<int> out_shape;
        std::string err;
        if (!half.engine->run(x, half.shape, e->out, out_shape, err)) {
            code = TLC_E_INTERNAL;
            msg = "inference failed: " + err;
            break;
        }
        r.type = TLC_RESULT;
        r.dtype = TLC_F32;
        r.rank = uint8_t(out_shape.size());
        for (size_t i = 0; i < out_shape.size() && i < TLC_MAX_RANK; i++) r.dims[i] = uint32_t(out_shape[i]);
        r.payload_len = e->out.size() * 4;
        *rp = e->out.data();
        *rpl = e->out.size() * 4;
        e->stats.results++;
    } while (false);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    r.request_id = rid;
    r.cut_id = cut;
    r.flags = uint16_t(flags & TLC_FLAG_TL);
    r.server_us = uint32_t(us);
    if (code) {
        e->stats.errors[code < 10 ? code : TLC_E_INTERNAL]++;
        e->reply_text = msg.substr(0, 4096);
        r.type = TLC_ERROR;
        r.dtype = 0;
        r.rank = 0;
        r.status = uint8_t(code);
        r.payload_len = e->reply_text.size();
        *rp = e->reply_text.data();
        *rpl = e->reply_text.size();
        e->error = msg;
        if (e->log) {
            std::string line = "request " + std::to_string(rid) + ": " + tlc_strerror(code) + ": " + msg;
            e->log(e->log_user, line.c_str());
        }
    }
    tlc_header_pack(&r, rh, TLC_HEADER_SIZE);
    return TLC_OK;
}

extern "C" int tlc_edge_handle(tlc_edge *e, const void *header, size_t header_len, const void *payload,
                               size_t payload_len, void *reply_header, const void **reply_payload,
                               size_t *reply_payload_len) {
    if (!e || (!header && header_len) || (!payload && payload_len) || !reply_header || !reply_payload ||
        !reply_payload_len)
        return TLC_E_INVALID_ARGUMENT;
    return handle(e, std::string(), header, header_len, payload, payload_len,
                  static_cast<unsigned char *>(reply_header), reply_payload, reply_payload_len);
}

extern "C" int tlc_edge_serve(tlc_edge *e, const char *endpoint, volatile int *stop, uint64_t max_messages) {
    if (!e || !endpoint) return TLC_E_INVALID_ARGUMENT;
    void *ctx = zmq_ctx_new();
    std::atomic<bool> zap_stop(false), zap_ready(false);
    std::thread zap;
    if (e->curve) {
        zap = std::thread(zap_loop, ctx, e, &zap_stop, &zap_ready);
        while (!zap_ready.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0, hwm = 64, one = 1;
    if (e->curve) {
        uint8_t secret[32];
        zmq_z85_decode(secret, e->secret_z85.c_str());
        zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, 32);
    }
    int64_t maxsz = int64_t(e->max_message) * 4 + 4096;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxsz, sizeof maxsz);
    if (zmq_bind(sock, endpoint) != 0) {
        std::string m = std::string("cannot listen on ") + endpoint + ": " + zmq_strerror(zmq_errno());
        zmq_close(sock);
        zap_stop.store(true);
        if (zap.joinable()) zap.join();
        zmq_ctx_term(ctx);
        return fail(e, TLC_E_TRANSPORT, m);
    }
    uint64_t answered = 0;
    std::vector<zmq_msg_t> parts;
    unsigned char rh[TLC_HEADER_SIZE];
    int status = TLC_OK;
    while (!(stop && *stop) && (!max_messages || answered < max_messages)) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, 100);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            status = fail(e, TLC_E_TRANSPORT, zmq_strerror(zmq_errno()));
            break;
        }
        if (!rc) continue;
        for (auto &m : parts) zmq_msg_close(&m);
        parts.clear();
        int more = 1;
        while (more) {
            parts.emplace_back();
            zmq_msg_init(&parts.back());
            if (zmq_msg_recv(&parts.back(), sock, 0) < 0) { more = 0; break; }
            more = zmq_msg_more(&parts.back());
        }
        if (parts.size() < 1) continue;
        std::string peer(static_cast<char *>(zmq_msg_data(&parts[0])), zmq_msg_size(&parts[0]));
        const void *rp = nullptr;
        size_t rpl = 0;
        if (parts.size() == 3) {
            handle(e, peer, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), zmq_msg_data(&parts[2]),
                   zmq_msg_size(&parts[2]), rh, &rp, &rpl);
        } else {  // a frame count the protocol does not have
            static const char m[] = "message has the wrong number of frames, expected 2 (header, payload)";
            tlc_header r{};
            r.type = TLC_ERROR;
            r.status = TLC_E_BAD_FRAME;
            r.cut_id = TLC_INPUT_CUT;
            r.payload_len = sizeof m - 1;
            tlc_header_pack(&r, rh, TLC_HEADER_SIZE);
            rp = m;
            rpl = sizeof m - 1;
            e->stats.messages++;
            e->stats.errors[TLC_E_BAD_FRAME]++;
            if (e->log) e->log(e->log_user, (std::string("request 0: bad frame: ") + m).c_str());
        }
        zmq_send(sock, peer.data(), peer.size(), ZMQ_SNDMORE);
        zmq_send(sock, rh, TLC_HEADER_SIZE, ZMQ_SNDMORE);
        zmq_send(sock, rp, rpl, 0);
        answered++;
    }
    for (auto &m : parts) zmq_msg_close(&m);
    zmq_close(sock);
    zap_stop.store(true);
    if (zap.joinable()) zap.join();
    zmq_ctx_term(ctx);
    return status;
}
