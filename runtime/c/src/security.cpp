// Security of the C edge: CURVE keys and the ZAP handler that admits only listed devices, the
// plain-TCP policy (the loopback rule), and replay protection per connection; as runtime/security.py.
#include <zmq.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "edge.hpp"

using tlc::fail;

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

std::string plain_tcp_refusal(const std::string &ep) {
    if (ep.find("://") == std::string::npos) {  // not a plain-TCP risk: a missing transport (as Python says)
        bool port_only = !ep.empty() && ep.find_first_not_of("0123456789") == std::string::npos;
        return "'" + ep + "' names no transport: write tcp://" + (port_only ? "127.0.0.1:" : "") + ep + " (or ipc://PATH)";
    }
    size_t colon = ep.rfind(':');
    std::string port = colon == std::string::npos ? "" : ep.substr(colon + 1);
    bool digits = !port.empty() && port.find_first_not_of("0123456789") == std::string::npos;
    return "refusing plain TCP on " + ep + ": features of product images would cross unencrypted; to try it on this "
           "machine, listen on loopback: --bind tcp://127.0.0.1:" + (digits ? port : std::string("5555")) +
           "; for a real link give --key edge.key_secret --allow DIR (tlc_edge_set_curve; make keys with `tlcut keys`), "
           "or --insecure for a lab link (tlc_edge_set_insecure)";
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

namespace {

// A ZeroMQ certificate file: lines `public-key = "<40 Z85 chars>"` and `secret-key = "..."`.
std::string cert_value(const std::string &file, const std::string &key) {
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
bool z85_key(const std::string &z85, uint8_t out[32]) {
    return z85.size() == 40 && zmq_z85_decode(out, z85.c_str()) != nullptr;
}

}  // namespace

extern "C" {

int tlc_edge_set_insecure(tlc_edge *e, int insecure) {
    if (!e) return TLC_E_INVALID_ARGUMENT;
    e->insecure = insecure != 0;
    return TLC_OK;
}

int tlc_edge_set_curve(tlc_edge *e, const char *secret_file, const char *allow_dir) {
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

}  // extern "C"

// ZAP (RFC 27) handler thread: every request is read whole and answered (tlc::zap_decide).
void tlc::zap_loop(void *zap, tlc_edge *e, std::atomic<bool> *stop) {
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
            tlc::emit(e, "connection refused: its CURVE key is not in the allow-list");
        }
        for (int i = 0; i < 6; i++) zmq_send(zap, d.reply[i].data(), d.reply[i].size(), i < 5 ? ZMQ_SNDMORE : 0);
    }
}
