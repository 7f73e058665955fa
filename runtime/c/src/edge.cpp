// The C edge: tails of a bundle behind the engine boundary, the request handler, the ZeroMQ loop.
// It answers exactly as runtime/serve.py does: the same checks in the same order, the same codes.
#include <zmq.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine.hpp"
#include "internal.hpp"
#include "tlcut.h"

using json = nlohmann::json;

namespace {

struct Half {
    std::string what;              // "cut 3", "cut 3 + TL", "the whole model" (as the Python edge says it)
    std::string file;              // relative to the bundle, for messages
    int dtype = TLC_F32;           // of the input, from the manifest
    std::vector<int64_t> shape;    // of the input, from the manifest
    std::unique_ptr<tlc::Engine> engine;
};

struct CutInfo {
    uint64_t index = 0;
    std::string tensor, layer, why_no_tl;
    bool tl = false;
};

int dtype_code(const std::string &s) {
    static const std::map<std::string, int> m = {{"float32", TLC_F32}, {"float16", TLC_F16}, {"int8", TLC_I8},
                                                 {"uint8", TLC_U8},    {"int32", TLC_I32},   {"int64", TLC_I64},
                                                 {"float64", TLC_F64}};
    auto it = m.find(s);
    return it == m.end() ? 0 : it->second;
}

const char *type_name(int t) {
    static const char *names[] = {"?", "REQUEST", "RESULT", "ERROR", "PING", "PONG"};
    return t >= TLC_REQUEST && t <= TLC_PONG ? names[t] : names[0];
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

std::string dims_str(const std::vector<int64_t> &s) {
    std::ostringstream o;
    o << "[";
    for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
    o << "]";
    return o.str();
}

std::string what(uint32_t cut, uint16_t flags) {
    std::string w = cut == TLC_INPUT_CUT ? "the whole model"
                                         : "cut " + std::to_string(cut) + ((flags & TLC_FLAG_TL) ? " + TL" : "");
    if (flags & TLC_BAND_MASK)
        return "band " + std::to_string(((flags & TLC_BAND_MASK) >> 8) - 1) + " of " +
               (cut == TLC_INPUT_CUT ? std::string("the input") : w);
    return w;
}

thread_local std::string create_error;  // why this thread's last tlc_edge_create failed

}  // namespace

struct tlc_edge {
    std::string dir;
    json artifacts = json::array();
    std::vector<CutInfo> cuts;
    std::unique_ptr<tlc::Runtime> runtime;            // made by the first tlc_edge_add_cut; outlives the halves
    std::map<std::pair<uint32_t, int>, Half> halves;  // (cut_id, TL flag) -> half
    tlc::Options engine_options;
    std::string precision = "float32";               // of the artifacts tlc_edge_add_cut loads
    size_t max_message = size_t(256) << 20;
    std::string error;
    std::string reply_text;
    std::vector<float> in;           // a restored (decoded) payload
    std::vector<uint8_t> pixels;     // a decoded JPEG (HWC), before the affine restore
    std::vector<uint64_t> aligned;   // a raw payload copied to 8-byte alignment
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

static int fail(tlc_edge *e, int code, const std::string &msg) {
    if (e) e->error = msg;
    return code;
}

static void emit(tlc_edge *e, const std::string &line) {
    std::lock_guard<std::mutex> lock(e->log_mu);
    if (e->log) e->log(e->log_user, line.c_str());
}

// ---- pieces tested on their own (internal.hpp) ------------------------------------------------
namespace tlc {

ZapDecision zap_decide(const std::vector<std::string> &fr, const std::set<std::string> &allowed) {
    ZapDecision d;
    std::string rid = fr.size() > 1 ? fr[1] : "";
    if (fr.size() < 6 || fr[0] != "1.0") {
        d.reply = {"1.0", rid, "500", "malformed ZAP request", "", ""};
        return d;
    }
    bool ok = false;
    if (fr[5] == "CURVE" && fr.size() >= 7 && fr[6].size() == 32) {
        char z85[41];
        if (zmq_z85_encode(z85, reinterpret_cast<const uint8_t *>(fr[6].data()), 32)) ok = allowed.count(std::string(z85, 40)) > 0;
    }
    d.refused = !ok;
    d.reply = {"1.0", rid, ok ? "200" : "400", ok ? "OK" : "key not allowed", "", ""};
    return d;
}

bool is_loopback(const std::string &ep) {
    auto starts = [&](const char *p) { return ep.compare(0, std::strlen(p), p) == 0; };
    if (starts("ipc://") || starts("inproc://")) return true;
    if (!starts("tcp://")) return false;
    std::string host = ep.substr(6);
    auto ends_host = [&](size_t n) { return host.size() == n || host[n] == ':'; };
    if (host.compare(0, 9, "localhost") == 0 && ends_host(9)) return true;
    if (host.compare(0, 5, "[::1]") == 0 && ends_host(5)) return true;
    if (host.compare(0, 4, "127.") != 0) return false;
    // 127.D+.D+.D+ then ':' or the end, as the Python rule's regex
    size_t i = 4;
    for (int part = 0; part < 3; part++) {
        size_t start = i;
        while (i < host.size() && host[i] >= '0' && host[i] <= '9') i++;
        if (i == start) return false;
        if (part < 2) {
            if (i >= host.size() || host[i] != '.') return false;
            i++;
        }
    }
    return ends_host(i);
}

bool ReplayTable::accept(const std::string &peer, uint64_t rid, uint64_t *last) {
    auto it = index_.find(peer);
    if (it != index_.end()) {
        if (rid <= it->second->second) {
            if (last) *last = it->second->second;
            return false;
        }
        it->second->second = rid;
        order_.splice(order_.end(), order_, it->second);  // now the most recent
        return true;
    }
    order_.emplace_back(peer, rid);
    index_.emplace(peer, std::prev(order_.end()));
    while (index_.size() > capacity_) {
        index_.erase(order_.front().first);
        order_.pop_front();
    }
    return true;
}

}  // namespace tlc

// ---- the bundle --------------------------------------------------------------------------------
static int create_fail(int code, const std::string &msg) {
    create_error = msg;
    return code;
}

// The manifest's cuts: what --cut may name, and whether the TL applies at each.
static std::vector<CutInfo> read_cuts(const json &m) {
    std::vector<CutInfo> out;
    for (const auto &c : m.at("cuts")) {
        CutInfo ci;
        ci.index = c.at("index").get<uint64_t>();
        ci.tensor = c.at("tensor").get<std::string>();
        if (c.contains("layer") && c["layer"].is_string()) ci.layer = c["layer"].get<std::string>();
        ci.tl = c.at("tl").get<bool>();
        if (c.contains("why_no_tl") && c["why_no_tl"].is_string()) ci.why_no_tl = c["why_no_tl"].get<std::string>();
        out.push_back(ci);
    }
    return out;
}

namespace tlc {
const char *dtype_name(int d, const char *unknown) {
    switch (d) {
    case TLC_F32: return "float32";
    case TLC_F16: return "float16";
    case TLC_I8: return "int8";
    case TLC_U8: return "uint8";
    case TLC_I32: return "int32";
    case TLC_I64: return "int64";
    case TLC_F64: return "float64";
    default: return unknown;
    }
}
}  // namespace tlc

extern "C" {

int tlc_edge_create(const char *bundle_dir, tlc_edge **out) {
    create_error.clear();
    if (!out) return create_fail(TLC_E_INVALID_ARGUMENT, "tlc_edge_create: out is NULL");
    *out = nullptr;
    if (!bundle_dir) return create_fail(TLC_E_INVALID_ARGUMENT, "tlc_edge_create: bundle_dir is NULL");
    std::string dir = bundle_dir, mf = dir + "/manifest.json";
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec))
        return create_fail(TLC_E_NOT_FOUND, "bundle '" + dir + "' does not exist; create one with `tlcut export MODEL -o " + dir + "`");
    std::ifstream f(mf);
    if (!f)
        return create_fail(TLC_E_NOT_FOUND, "'" + dir + "' is not a complete tlcut bundle (no manifest.json); re-run `tlcut export MODEL -o " +
                                                dir + " --force`");
    json m = json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (m.is_discarded() || !m.is_object()) return create_fail(TLC_E_BUNDLE, "'" + mf + "' is not readable JSON; re-export the bundle");
    if (!m.contains("format") || m["format"] != "tlcut-bundle")
        return create_fail(TLC_E_BUNDLE, "'" + mf + "' is not a tlcut bundle manifest (format=" +
                                             (m.contains("format") ? m["format"].dump() : std::string("none")) + ")");
    const json version = m.contains("version") ? m["version"] : json();
    if (!version.is_number() || version.get<double>() != TLC_BUNDLE_VERSION)
        return create_fail(TLC_E_BUNDLE, "bundle '" + dir + "' has format version " + version.dump() + ", libtlcut " +
                                             tlc_version() + " reads version " + std::to_string(TLC_BUNDLE_VERSION) +
                                             "; re-export the bundle");
    auto *e = new (std::nothrow) tlc_edge();
    if (!e) return create_fail(TLC_E_NO_MEMORY, "out of memory");
    try {
        e->cuts = read_cuts(m);
        if (m.contains("artifacts")) {
            if (!m["artifacts"].is_array()) throw std::runtime_error("artifacts is not a list");
            e->artifacts = m["artifacts"];
        }
    } catch (const std::exception &x) {
        delete e;
        return create_fail(TLC_E_BUNDLE, "'" + mf + "' is damaged (" + x.what() + "); re-export the bundle with --force");
    }
    e->dir = dir;
    *out = e;
    return TLC_OK;
}

void tlc_edge_destroy(tlc_edge *e) { delete e; }

const char *tlc_edge_last_error(const tlc_edge *e) { return e ? e->error.c_str() : create_error.c_str(); }

int tlc_edge_set_max_message(tlc_edge *e, size_t bytes) {
    if (!e) return TLC_E_INVALID_ARGUMENT;
    if (bytes < TLC_HEADER_SIZE) return fail(e, TLC_E_INVALID_ARGUMENT, "the message size limit must be at least 80 bytes");
    e->max_message = bytes;
    return TLC_OK;
}

int tlc_edge_set_insecure(tlc_edge *e, int insecure) {
    if (!e) return TLC_E_INVALID_ARGUMENT;
    e->insecure = insecure != 0;
    return TLC_OK;
}

int tlc_edge_set_threads(tlc_edge *e, int threads) {
    if (!e) return TLC_E_INVALID_ARGUMENT;
    if (threads < 0 || threads > 4096)
        return fail(e, TLC_E_INVALID_ARGUMENT, "threads must be 0 (the engine's choice) to 4096, got " + std::to_string(threads));
    e->engine_options.threads = threads;
    return TLC_OK;
}

int tlc_edge_set_precision(tlc_edge *e, const char *precision) {
    if (!e || !precision) return TLC_E_INVALID_ARGUMENT;
    std::string p = precision;
    if (p != "float32" && p != "int8") return fail(e, TLC_E_INVALID_ARGUMENT, "precision must be float32 or int8, got '" + p + "'");
    e->precision = p;
    return TLC_OK;
}

const char *tlc_engine(void) { return tlc::engine_name(); }
const char *tlc_jpeg(void) { return tlc::jpeg_decoder(); }

}  // extern "C"

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

// A 40-character Z85 key as its 32 bytes; false if it is not valid Z85.
static bool z85_key(const std::string &z85, uint8_t out[32]) {
    return z85.size() == 40 && zmq_z85_decode(out, z85.c_str()) != nullptr;
}

extern "C" int tlc_edge_set_curve(tlc_edge *e, const char *secret_file, const char *allow_dir) {
    if (!e || !secret_file || !allow_dir) return TLC_E_INVALID_ARGUMENT;
    if (!zmq_has("curve")) return fail(e, TLC_E_TRANSPORT, "this libzmq was built without CURVE");
    std::string pub = cert_value(secret_file, "public-key"), sec = cert_value(secret_file, "secret-key");
    uint8_t secret[32], scratch[32];
    if (sec.empty() || pub.empty() || !z85_key(sec, secret) || !z85_key(pub, scratch))
        return fail(e, TLC_E_NOT_FOUND, std::string("'") + secret_file + "' is not a CURVE secret key file (NAME.key_secret from `tlcut keys`)");
    std::set<std::string> allowed;
    std::error_code ec;
    for (auto &entry : std::filesystem::directory_iterator(allow_dir, ec))
        if (entry.path().extension() == ".key") {
            std::string k = cert_value(entry.path().string(), "public-key");
            if (k.empty()) continue;
            if (!z85_key(k, scratch))
                return fail(e, TLC_E_NOT_FOUND, "'" + entry.path().string() + "' holds no valid CURVE public key (bad Z85)");
            allowed.insert(k);
        }
    if (ec) return fail(e, TLC_E_NOT_FOUND, std::string("--allow folder '") + allow_dir + "' cannot be read");
    if (allowed.empty()) return fail(e, TLC_E_NOT_FOUND, std::string("--allow folder '") + allow_dir + "' holds no public keys (*.key); no device could connect");
    e->curve = true;
    std::memcpy(e->secret, secret, 32);
    e->allowed = std::move(allowed);
    return TLC_OK;
}

// ZAP (RFC 27) handler thread: every request is read whole and answered (tlc::zap_decide).
static void zap_loop(void *zap, tlc_edge *e, std::atomic<bool> *stop) {
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
        if (fr.empty()) continue;  // nothing was received, so the REP socket owes no reply
        tlc::ZapDecision d = tlc::zap_decide(fr, e->allowed);
        if (d.refused) {
            e->denied++;
            emit(e, "connection refused: its CURVE key is not in the allow-list");
        }
        for (int i = 0; i < 6; i++) zmq_send(zap, d.reply[i].data(), d.reply[i].size(), i < 5 ? ZMQ_SNDMORE : 0);
    }
}

extern "C" int tlc_edge_set_log(tlc_edge *e, tlc_log_fn fn, void *user) {
    if (!e) return TLC_E_INVALID_ARGUMENT;
    std::lock_guard<std::mutex> lock(e->log_mu);
    e->log = fn;
    e->log_user = user;
    return TLC_OK;
}

extern "C" int tlc_edge_stats_get(const tlc_edge *e, tlc_edge_stats *out) {
    if (!e || !out) return TLC_E_INVALID_ARGUMENT;
    *out = e->stats;
    out->denied = e->denied.load();
    return TLC_OK;
}

// The portable ONNX artifact (kind, cut, tl) at the edge's precision, or nullptr. Batch-1 rows
// only: this edge does not batch, and rows with a "batch" other than 1 are extra tails for one that does.
static const json *find_artifact(const tlc_edge *e, const std::string &kind, const json &cut, bool tl) {
    for (const auto &a : e->artifacts)
        if (a.at("kind") == kind && a.at("cut") == cut && a.at("tl") == tl && a.at("engine") == "onnx" &&
            a.at("precision") == e->precision && (!a.contains("batch") || a.at("batch") == 1))
            return &a;
    return nullptr;
}

// Load one artifact as a Half: its input from the manifest, its engine, one run on zeros.
static int load_half(tlc_edge *e, const json &a, const std::string &whatis, const std::string &compile_hint, Half &h) {
    h.what = whatis;
    h.file = a.at("file").get<std::string>();
    const json &in = a.at("input");
    std::string dt = in.at("dtype").get<std::string>(), odt = a.at("output").at("dtype").get<std::string>();
    h.dtype = dtype_code(dt);
    if (!h.dtype) return fail(e, TLC_E_BUNDLE, h.file + " takes dtype '" + dt + "', which the wire protocol has no code for");
    tlc::Spec spec;
    spec.in_dtype = h.dtype;
    spec.out_dtype = dtype_code(odt);
    if (!spec.out_dtype) return fail(e, TLC_E_BUNDLE, h.file + " gives dtype '" + odt + "', which the wire protocol has no code for");
    const json &shape = in.at("shape");
    if (!shape.is_array() || shape.size() > TLC_MAX_RANK)
        return fail(e, TLC_E_BUNDLE, h.file + " takes an input of rank " + std::to_string(shape.size()) + "; the wire protocol carries at most 8");
    size_t n = tlc_dtype_size(h.dtype);  // bytes of one input
    for (const auto &d : shape) {
        if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > INT_MAX || n > SIZE_MAX / size_t(d.get<int64_t>()))
            return fail(e, TLC_E_BUNDLE, h.file + " has input shape " + shape.dump() + "; the C edge serves fixed shapes of dims "
                                         "1..2^31-1 whose size fits memory");
        h.shape.push_back(d.get<int64_t>());
        n *= size_t(d.get<int64_t>());
    }
    std::string path = e->dir + "/" + h.file;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
        return fail(e, TLC_E_NOT_FOUND, path + " is listed in the manifest but missing; " + compile_hint);
    std::string err;
    if (!e->runtime && !(e->runtime = tlc::make_runtime(err))) return fail(e, TLC_E_ENGINE, err);
    spec.in_shape = h.shape;
    h.engine = e->runtime->load(path, spec, e->engine_options, err);
    if (!h.engine) return fail(e, TLC_E_ENGINE, err);
    // one run on zeros: lazy initialisation happens now, and an engine that cannot run it says so now
    std::vector<uint64_t> zeros(n / 8 + 1);
    tlc::Output out;
    if (!h.engine->run(zeros.data(), out, err)) return fail(e, TLC_E_ENGINE, "the engine cannot run " + path + ": " + err);
    return TLC_OK;
}

extern "C" int tlc_edge_add_cut(tlc_edge *e, const char *cut, int tl) {
    if (!e || !cut || tl < -1 || tl > 1) return TLC_E_INVALID_ARGUMENT;
    std::string text = cut;
    try {
        if (text == "input") {
            const json *a = find_artifact(e, "model", json(), false);
            if (!a && e->precision != "float32")
                return fail(e, TLC_E_NOT_FOUND, "bundle '" + e->dir + "' has no " + e->precision + " ONNX of the whole model; run " +
                                                    "`tlcut compile " + e->dir + " --cuts K --precision " + e->precision +
                                                    " --calib DATA` first (it quantizes the whole model too)");
            if (!a) return fail(e, TLC_E_BUNDLE, "bundle '" + e->dir + "' lists no float32 ONNX of the whole model; re-export it");
            Half h;
            int rc = load_half(e, *a, "the whole model", "re-export the bundle", h);
            if (rc) return rc;
            e->halves[{TLC_INPUT_CUT, 0}] = std::move(h);
            return TLC_OK;
        }
        // a cut by index, tensor name or Keras layer name (the last cut of that layer), as Bundle.cut
        const CutInfo *c = nullptr;
        bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
        if (digits) {
            errno = 0;
            unsigned long long k = std::strtoull(text.c_str(), nullptr, 10);
            if (errno == 0 && k < e->cuts.size()) c = &e->cuts[size_t(k)];
        } else {
            for (const auto &ci : e->cuts)
                if (ci.tensor == text) { c = &ci; break; }
            if (!c)
                for (const auto &ci : e->cuts)
                    if (!ci.layer.empty() && ci.layer == text) c = &ci;
        }
        if (!c)
            return fail(e, TLC_E_NOT_FOUND, "cut '" + text + "' not found; the model has " + std::to_string(e->cuts.size()) +
                                                " cuts (0.." + std::to_string(e->cuts.size() ? e->cuts.size() - 1 : 0) +
                                                "), list them with `tlcut cuts " + e->dir + "`");
        if (c->index >= TLC_INPUT_CUT) return fail(e, TLC_E_BUNDLE, "cut index " + std::to_string(c->index) + " does not fit the wire protocol");
        std::string k = std::to_string(c->index);
        if (tl == 1 && !c->tl)
            return fail(e, TLC_E_INVALID_ARGUMENT, "the TL cannot apply at cut " + k + " (" + c->why_no_tl + "); use --tl off or --tl both");
        std::vector<bool> modes;
        if (tl != 1) modes.push_back(false);
        if (tl != 0 && c->tl) modes.push_back(true);
        std::string compile = "`tlcut compile " + e->dir + " --cuts " + k +
                              (e->precision == "float32" ? "" : " --precision " + e->precision + " --calib DATA") + "`";
        std::map<std::pair<uint32_t, int>, Half> loaded;
        for (bool with_tl : modes) {
            const json *a = find_artifact(e, "tail", json(c->index), with_tl);
            if (!a) {
                if (tl == -1 && with_tl) continue;  // "both": the TL tail where it was compiled
                return fail(e, TLC_E_NOT_FOUND, "cut " + k + " has no compiled " + (e->precision == "float32" ? "" : e->precision + " ") +
                                                    "tail" + (with_tl ? " with the TL" : "") + " in bundle '" + e->dir + "'; run " +
                                                    compile + " first");
            }
            Half h;
            int rc = load_half(e, *a, what(uint32_t(c->index), with_tl ? TLC_FLAG_TL : 0), "re-run " + compile, h);
            if (rc) return rc;
            loaded[{uint32_t(c->index), with_tl ? TLC_FLAG_TL : 0}] = std::move(h);
        }
        for (auto &kv : loaded) e->halves[kv.first] = std::move(kv.second);
        return TLC_OK;
    } catch (const std::exception &x) {  // a manifest entry of the wrong shape
        return fail(e, TLC_E_BUNDLE, "'" + e->dir + "/manifest.json' is damaged (" + x.what() + "); re-export the bundle with --force");
    } catch (...) {
        return fail(e, TLC_E_INTERNAL, "unexpected failure while loading cut " + text);
    }
}

extern "C" int tlc_edge_request_header(const tlc_edge *e, uint32_t cut_id, uint16_t flags, tlc_header *out) {
    if (!e || !out) return TLC_E_INVALID_ARGUMENT;
    if (flags & TLC_BAND_MASK) return TLC_E_WRONG_CUT;
    auto hit = e->halves.find({cut_id, flags & TLC_FLAG_TL});
    if (hit == e->halves.end()) return TLC_E_WRONG_CUT;
    const Half &h = hit->second;
    *out = tlc_header{};
    out->version = TLC_PROTOCOL_VERSION;
    out->type = TLC_REQUEST;
    out->cut_id = cut_id;
    out->flags = uint16_t(flags & TLC_FLAG_TL);
    out->dtype = uint8_t(h.dtype);
    out->rank = uint8_t(h.shape.size());
    uint64_t n = tlc_dtype_size(h.dtype);
    for (size_t i = 0; i < h.shape.size(); i++) {
        out->dims[i] = uint32_t(h.shape[i]);
        n *= uint64_t(h.shape[i]);
    }
    out->payload_len = n;
    return TLC_OK;
}

// What the edge serves, for the wrong-cut message: "cut 1 (float32[1, 4, 7, 7]), ...".
static std::string describe(const tlc_edge *e) {
    std::string s;
    for (const auto &kv : e->halves) {
        std::string w = kv.second.what == "the whole model" ? "whole model" : kv.second.what;
        s += (s.empty() ? "" : ", ") + w + " (" + tlc::dtype_name(kv.second.dtype) + dims_str(kv.second.shape) + ")";
    }
    return s.empty() ? "nothing" : s;
}

// Why tlc_header_parse refused ``buf``, in the Python edge's words.
static std::string header_problem(const unsigned char *p, size_t len, int code) {
    if (len != TLC_HEADER_SIZE) return "header is " + std::to_string(len) + " bytes, expected 80";
    switch (code) {
    case TLC_E_VERSION: return "protocol version " + std::to_string(p[4]) + ", this side speaks 1";
    case TLC_E_BAD_TYPE: return "unknown message type " + std::to_string(p[5]);
    case TLC_E_WRONG_TENSOR: return "unknown dtype code " + std::to_string(p[6]);
    default: break;
    }
    if (std::memcmp(p, "TLCT", 4) != 0) return "bad magic, expected b'TLCT'";
    if (p[7] > TLC_MAX_RANK) return "rank " + std::to_string(p[7]) + " exceeds 8";
    return std::string("bad header: ") + tlc_strerror(code);
}

namespace {
struct Frame {
    const void *data;
    size_t size;
};
}  // namespace

// Answer one message: ``fr`` its first frames (at most 2 are looked at), ``nfr`` how many it had,
// ``bytes`` their total size, ``peer`` the connection (empty: no replay check). Always a reply.
static void answer(tlc_edge *e, const std::string &peer, const Frame *fr, size_t nfr, size_t bytes, unsigned char *rh,
                   const void **rp, size_t *rpl) {
    auto t0 = std::chrono::steady_clock::now();
    tlc_header h{}, r{};
    uint64_t rid = 0;
    uint32_t cut = TLC_INPUT_CUT;
    uint16_t flags = 0;
    int code = TLC_OK;
    std::string msg;
    e->stats.messages++;
    *rp = nullptr;
    *rpl = 0;
    do {
        if (bytes > e->max_message) {
            code = TLC_E_TOO_LARGE;
            msg = "message of " + std::to_string(bytes) + " bytes exceeds this edge's limit of " + std::to_string(e->max_message);
            break;
        }
        if (nfr != 2) {
            code = TLC_E_BAD_FRAME;
            msg = "message has " + std::to_string(nfr) + " frames, expected 2 (header, payload)";
            break;
        }
        static const unsigned char none = 0;  // an address for empty frames, which may come as NULL
        const void *hbuf = fr[0].data ? fr[0].data : &none, *payload = fr[1].data ? fr[1].data : &none;
        size_t plen = fr[1].size;
        code = tlc_header_parse(hbuf, fr[0].size, &h);
        if (code) {
            msg = header_problem(static_cast<const unsigned char *>(hbuf), fr[0].size, code);
            break;
        }
        rid = h.request_id, cut = h.cut_id, flags = h.flags;
        std::vector<int64_t> got(h.dims, h.dims + h.rank);
        code = tlc_frame_check(&h, plen);
        if (code) {
            if (code == TLC_E_BAD_FRAME) {
                msg = "payload is " + std::to_string(plen) + " bytes, header says " + std::to_string(h.payload_len);
            } else {
                unsigned __int128 need = tlc_dtype_size(h.dtype);
                bool big = false;
                for (int64_t d : got) {
                    need *= uint64_t(d);
                    if (need > UINT64_MAX) big = true, need = (unsigned __int128)UINT64_MAX + 1;
                }
                msg = "dims " + dims_str(got) + " of " + tlc::dtype_name(h.dtype) + " need " +
                      (big ? std::string("more than 2^64") : std::to_string(uint64_t(need))) + " bytes, payload has " +
                      std::to_string(h.payload_len);
            }
            break;
        }
        if (h.type == TLC_PING) {
            e->stats.pings++;
            r.type = TLC_PONG;
            r.request_id = rid;
            r.cut_id = TLC_INPUT_CUT;
            if (tlc_header_pack(&r, rh, TLC_HEADER_SIZE) == TLC_OK) return;
            code = TLC_E_INTERNAL;  // cannot happen: a PONG has rank 0
            msg = "the PONG header could not be packed";
            break;
        }
        if (h.type != TLC_REQUEST) {
            code = TLC_E_BAD_TYPE;
            msg = std::string("an edge takes REQUEST or PING, got ") + type_name(h.type);
            break;
        }
        if (!h.dtype) {
            code = TLC_E_WRONG_TENSOR;
            msg = "a REQUEST must carry a tensor; dtype 0 (none) is not one";
            break;
        }
        uint64_t last = 0;
        if (!peer.empty() && !e->replay.accept(peer, rid, &last)) {
            code = TLC_E_REPLAY;
            msg = "request id " + std::to_string(rid) + " is not above " + std::to_string(last) + ", the last one on this connection";
            break;
        }
        // a tiles band never matches a half: this edge serves whole tails only
        auto hit = (flags & TLC_BAND_MASK) ? e->halves.end() : e->halves.find({cut, flags & TLC_FLAG_TL});
        if (hit == e->halves.end()) {
            code = TLC_E_WRONG_CUT;
            msg = "this edge does not serve " + what(cut, flags) + "; it serves " + describe(e);
            break;
        }
        Half &half = hit->second;
        size_t n = 1;
        for (int64_t d : got) n *= size_t(d);  // tlc_frame_check proved n x size == plen, no overflow
        // restore the wire encoding (docs/protocol.md): float16 and int8 affine stand for float32
        const void *x = payload;
        int in_dtype = h.dtype;
        if (h.encoding == TLC_ENC_RAW) {
            size_t align = tlc_dtype_size(h.dtype);
            if (plen && reinterpret_cast<uintptr_t>(payload) % align) {  // ZeroMQ frames need not be aligned
                e->aligned.resize((plen + 7) / 8);
                std::memcpy(e->aligned.data(), payload, plen);
                x = e->aligned.data();
            }
        } else if (h.encoding == TLC_ENC_FLOAT16 && h.dtype == TLC_F16) {
            e->in.resize(n);
            const unsigned char *p = static_cast<const unsigned char *>(payload);
            for (size_t i = 0; i < n; i++) e->in[i] = half_to_float(uint16_t(p[2 * i] | p[2 * i + 1] << 8));
            x = e->in.data();
            in_dtype = TLC_F32;
        } else if (h.encoding == TLC_ENC_INT8 && h.dtype == TLC_I8 && h.scale > 0) {
            e->in.resize(n);
            const int8_t *p = static_cast<const int8_t *>(payload);
            for (size_t i = 0; i < n; i++) e->in[i] = (float(p[i]) - float(h.zero_point)) * h.scale;
            x = e->in.data();
            in_dtype = TLC_F32;
        } else if (h.encoding == TLC_ENC_UINT8 && h.dtype == TLC_U8 && h.scale > 0) {
            e->in.resize(n);
            const uint8_t *p = static_cast<const uint8_t *>(payload);
            for (size_t i = 0; i < n; i++) e->in[i] = (float(p[i]) - float(h.zero_point)) * h.scale;
            x = e->in.data();
            in_dtype = TLC_F32;
        } else if (h.encoding == TLC_ENC_JPEG && h.dtype == TLC_U8 && h.rank == 1 && h.scale > 0) {
            // the served input says the image's size and layout; the JPEG's header is checked against it
            const std::vector<int64_t> &s = half.shape;
            bool nhwc = s.size() == 4 && s[0] == 1 && (s[3] == 1 || s[3] == 3);
            bool nchw = !nhwc && s.size() == 4 && s[0] == 1 && (s[1] == 1 || s[1] == 3);
            int64_t ih = nhwc ? s[1] : nchw ? s[2] : 0, iw = nhwc ? s[2] : nchw ? s[3] : 0, ic = nhwc ? s[3] : nchw ? s[1] : 0;
            if (!(nhwc || nchw) || ih < 1 || iw < 1 || ih > 65535 || iw > 65535) {
                code = TLC_E_WRONG_TENSOR;
                msg = "jpeg does not fit this input " + dims_str(s) + ": it takes a rank-4 batch-1 image with 1 or 3 "
                      "channels (NHWC or NCHW); send it raw";
                break;
            }
            if (!tlc::jpeg_decode(payload, plen, int(ih), int(iw), int(ic), e->pixels, msg)) {
                code = TLC_E_WRONG_TENSOR;
                break;
            }
            size_t hw = size_t(ih) * size_t(iw), c = size_t(ic);
            e->in.resize(hw * c);
            const uint8_t *p = e->pixels.data();  // HWC
            const float zp = float(h.zero_point);
            for (size_t i = 0; i < hw; i++)
                for (size_t k = 0; k < c; k++) e->in[nhwc ? i * c + k : k * hw + i] = (float(p[i * c + k]) - zp) * h.scale;
            x = e->in.data();
            in_dtype = TLC_F32;
            got = s;
        } else {
            code = TLC_E_WRONG_TENSOR;
            bool affine = (h.encoding == TLC_ENC_INT8 && h.dtype == TLC_I8) ||
                          ((h.encoding == TLC_ENC_UINT8 || h.encoding == TLC_ENC_JPEG) && h.dtype == TLC_U8);
            msg = "encoding " + std::to_string(h.encoding) + " does not fit a " + tlc::dtype_name(h.dtype) + " payload";
            if (h.encoding == TLC_ENC_JPEG && h.dtype == TLC_U8 && h.rank != 1)
                msg += " with dims " + dims_str(got) + "; a JPEG is sent as dims [payload_len]";
            else if (affine)
                msg += " with scale <= 0";
            break;
        }
        if (in_dtype != half.dtype || got != half.shape) {
            code = TLC_E_WRONG_TENSOR;
            msg = half.what + " takes " + tlc::dtype_name(half.dtype) + dims_str(half.shape) + ", got " + tlc::dtype_name(in_dtype) + dims_str(got);
            break;
        }
        tlc::Output out;
        std::string err;
        if (!half.engine->run(x, out, err)) {
            code = TLC_E_INTERNAL;
            msg = "inference failed: " + err;
            break;
        }
        if (out.shape.size() > TLC_MAX_RANK) {
            code = TLC_E_INTERNAL;
            msg = "the result has rank " + std::to_string(out.shape.size()) + "; the wire protocol carries at most 8";
            break;
        }
        // the reply carries the result in the model's own dtype, as the Python edge's does
        uint64_t need = tlc_dtype_size(out.dtype);
        for (size_t i = 0; i < out.shape.size(); i++) {
            if (out.shape[i] < 0 || out.shape[i] > int64_t(UINT32_MAX)) need = 0;
            r.dims[i] = uint32_t(out.shape[i]);
            need *= uint64_t(out.shape[i]);
        }
        if (!need && out.bytes) {
            code = TLC_E_INTERNAL;
            msg = "the result's shape " + dims_str(out.shape) + " does not fit the wire protocol";
            break;
        }
        if (need != out.bytes) {  // cannot happen: the engine's bytes are its shape x dtype size
            code = TLC_E_INTERNAL;
            msg = "the engine's result has " + std::to_string(out.bytes) + " bytes, its shape needs " + std::to_string(need);
            break;
        }
        r.type = TLC_RESULT;
        r.dtype = uint8_t(out.dtype);
        r.rank = uint8_t(out.shape.size());
        r.payload_len = out.bytes;
        *rp = out.data;
        *rpl = out.bytes;
        e->stats.results++;
    } while (false);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    r.request_id = rid;
    r.cut_id = cut;
    r.flags = uint16_t(flags & TLC_FLAG_TL);
    r.server_us = us > UINT32_MAX ? UINT32_MAX : uint32_t(us);
    if (!code && tlc_header_pack(&r, rh, TLC_HEADER_SIZE) != TLC_OK) {  // never sends an unwritten header
        code = TLC_E_INTERNAL;
        msg = "the result header could not be packed";
        e->stats.results--;
    }
    if (code) {
        e->stats.errors[code < 10 ? code : TLC_E_INTERNAL]++;
        e->reply_text = msg.substr(0, TLC_MAX_ERROR_TEXT);
        tlc_header er{};
        er.type = TLC_ERROR;
        er.status = uint8_t(code < 10 ? code : TLC_E_INTERNAL);
        er.request_id = rid;
        er.cut_id = cut;
        er.flags = uint16_t(flags & TLC_FLAG_TL);
        er.server_us = r.server_us;
        er.payload_len = e->reply_text.size();
        tlc_header_pack(&er, rh, TLC_HEADER_SIZE);  // rank 0: cannot fail
        *rp = e->reply_text.data();
        *rpl = e->reply_text.size();
        e->error = msg;
        emit(e, "request " + std::to_string(rid) + " (" + what(cut, flags) + "): " + tlc_strerror(code) + ": " + msg);
    }
}

extern "C" int tlc_edge_handle_from(tlc_edge *e, const void *peer, size_t peer_len, const void *header, size_t header_len,
                                    const void *payload, size_t payload_len, void *reply_header, const void **reply_payload,
                                    size_t *reply_payload_len) {
    if (!e || (!header && header_len) || (!payload && payload_len) || (!peer && peer_len) || !reply_header ||
        !reply_payload || !reply_payload_len)
        return TLC_E_INVALID_ARGUMENT;
    Frame fr[2] = {{header, header_len}, {payload, payload_len}};
    size_t bytes = header_len + payload_len < header_len ? SIZE_MAX : header_len + payload_len;
    std::string p = peer ? std::string(static_cast<const char *>(peer), peer_len) : std::string();
    try {
        answer(e, p, fr, 2, bytes, static_cast<unsigned char *>(reply_header), reply_payload, reply_payload_len);
    } catch (const std::bad_alloc &) {
        return fail(e, TLC_E_NO_MEMORY, "out of memory while answering a request");
    }
    return TLC_OK;
}

extern "C" int tlc_edge_handle(tlc_edge *e, const void *header, size_t header_len, const void *payload, size_t payload_len,
                               void *reply_header, const void **reply_payload, size_t *reply_payload_len) {
    return tlc_edge_handle_from(e, nullptr, 0, header, header_len, payload, payload_len, reply_header, reply_payload,
                                reply_payload_len);
}

// ---- the ZeroMQ loop ---------------------------------------------------------------------------
namespace {
// Frames of one message, closed when it goes.
struct Message {
    std::deque<zmq_msg_t> parts;  // a deque: zmq_msg_t must not move once initialised
    ~Message() { clear(); }
    void clear() {
        for (auto &m : parts) zmq_msg_close(&m);
        parts.clear();
    }
};
}  // namespace

extern "C" int tlc_edge_serve(tlc_edge *e, const char *endpoint, volatile int *stop, uint64_t max_messages) {
    if (!e || !endpoint) return TLC_E_INVALID_ARGUMENT;
    const std::string ep = endpoint;
    bool local = tlc::is_loopback(ep);
    if (!e->curve && !local && !e->insecure)
        return fail(e, TLC_E_INSECURE, "refusing plain TCP on " + ep + ": features of product images would cross unencrypted; "
                                       "give --key/--allow (tlc_edge_set_curve), or --insecure for a lab link (tlc_edge_set_insecure)");
    if (!e->curve && !local) emit(e, "plain TCP on " + ep + ": the link is neither encrypted nor authenticated (--insecure)");
    void *ctx = zmq_ctx_new();
    if (!ctx) return fail(e, TLC_E_TRANSPORT, std::string("cannot make a ZeroMQ context: ") + zmq_strerror(zmq_errno()));
    std::atomic<bool> zap_stop(false);
    std::thread zap;
    void *zap_sock = nullptr, *sock = nullptr;
    int status = TLC_OK;
    auto transport = [&](const std::string &what) {
        return fail(e, TLC_E_TRANSPORT, what + ": " + zmq_strerror(zmq_errno()));
    };
    do {
        int zero = 0, hwm = 64, one = 1;
        if (e->curve) {  // the ZAP socket is bound before any CURVE socket exists, so no handshake misses it
            zap_sock = zmq_socket(ctx, ZMQ_REP);
            if (!zap_sock || zmq_setsockopt(zap_sock, ZMQ_LINGER, &zero, sizeof zero) ||
                zmq_bind(zap_sock, "inproc://zeromq.zap.01")) {
                status = transport("cannot start the ZAP handler");
                break;
            }
            zap = std::thread(zap_loop, zap_sock, e, &zap_stop);
        }
        sock = zmq_socket(ctx, ZMQ_ROUTER);
        if (!sock) {
            status = transport("cannot make a ROUTER socket");
            break;
        }
        // ZeroMQ cuts off frames over 4x the limit before spending memory on them (as the Python
        // edge); saturate, since 4 x a large limit does not fit an int64.
        int64_t maxsz = e->max_message > size_t(INT64_MAX - 4096) / 4 ? INT64_MAX : int64_t(e->max_message) * 4 + 4096;
        if (zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero) || zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
            zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxsz, sizeof maxsz) ||
            (e->curve && (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
                          zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, e->secret, 32)))) {
            status = transport("cannot set up the ROUTER socket");
            break;
        }
        if (zmq_bind(sock, endpoint) != 0) {
            status = transport("cannot listen on " + ep);
            break;
        }
        uint64_t answered = 0;
        Message msg;
        unsigned char rh[TLC_HEADER_SIZE];
        while (!(stop && *stop) && (!max_messages || answered < max_messages)) {
            zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
            int rc = zmq_poll(&item, 1, 100);
            if (rc < 0) {
                if (zmq_errno() == EINTR) continue;
                status = transport("polling failed");
                break;
            }
            if (!rc) continue;
            // Keep the identity and two frames; count and size any others (a frame-count error
            // still answers, and the size limit comes first, as in the Python edge).
            msg.clear();
            size_t nparts = 0, bytes = 0;
            bool more = true;
            while (more) {
                zmq_msg_t m;
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, sock, 0) < 0) {
                    zmq_msg_close(&m);
                    break;
                }
                more = zmq_msg_more(&m);
                if (nparts) bytes = bytes + zmq_msg_size(&m) < bytes ? SIZE_MAX : bytes + zmq_msg_size(&m);
                nparts++;
                if (msg.parts.size() < 3) {
                    msg.parts.emplace_back();
                    zmq_msg_init(&msg.parts.back());
                    zmq_msg_move(&msg.parts.back(), &m);
                }
                zmq_msg_close(&m);
            }
            if (msg.parts.empty()) continue;
            zmq_msg_t &id = msg.parts[0];
            std::string peer(static_cast<char *>(zmq_msg_data(&id)), zmq_msg_size(&id));
            Frame fr[2] = {};
            for (size_t i = 1; i < msg.parts.size(); i++) fr[i - 1] = {zmq_msg_data(&msg.parts[i]), zmq_msg_size(&msg.parts[i])};
            const void *rp = nullptr;
            size_t rpl = 0;
            try {
                answer(e, peer, fr, nparts - 1, bytes, rh, &rp, &rpl);
            } catch (const std::bad_alloc &) {  // no reply can be made; the device's retry will ask again
                emit(e, "out of memory while answering a request; no reply sent");
                continue;
            }
            if (zmq_send(sock, peer.data(), peer.size(), ZMQ_SNDMORE) < 0 || zmq_send(sock, rh, TLC_HEADER_SIZE, ZMQ_SNDMORE) < 0 ||
                zmq_send(sock, rp, rpl, 0) < 0)
                emit(e, std::string("reply not sent: ") + zmq_strerror(zmq_errno()));
            answered++;
        }
    } while (false);
    if (sock) zmq_close(sock);
    zap_stop.store(true);
    if (zap.joinable()) zap.join();
    if (zap_sock) zmq_close(zap_sock);
    zmq_ctx_term(ctx);
    return status;
}
