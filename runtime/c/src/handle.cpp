// The request handler: one message in, one reply out (RESULT, ERROR or PONG), with the Python
// edge's checks in its order and its codes and words (runtime/serve.py, docs/protocol.md).
#include <chrono>
#include <climits>
#include <cstring>
#include <new>

#include "edge.hpp"

using tlc::fail;
using tlc::Half;
using tlc::what;

namespace {

const char *type_name(int t) {
    static const char *names[] = {"?", "REQUEST", "RESULT", "ERROR", "PING", "PONG"};
    return t >= TLC_REQUEST && t <= TLC_PONG ? names[t] : names[0];
}

// What the edge serves, for the wrong-cut message: "cut 1 (float32[1, 4, 7, 7]), ...".
std::string describe(const tlc_edge *e) {
    std::string s;
    for (const auto &kv : e->halves) {
        std::string w = kv.second.what == "the whole model" ? "whole model" : kv.second.what;
        s += (s.empty() ? "" : ", ") + w + " (" + tlc::dtype_name(kv.second.dtype) + tlc::dims_str(kv.second.shape) + ")";
    }
    return s.empty() ? "nothing" : s;
}

// Why tlc_header_parse refused ``buf``, in the Python edge's words.
std::string header_problem(const unsigned char *p, size_t len, int code) {
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

}  // namespace

void tlc::answer(tlc_edge *e, const std::string &peer, const Frame *fr, size_t nfr, size_t bytes, unsigned char *rh,
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
                msg = "dims " + tlc::dims_str(got) + " of " + tlc::dtype_name(h.dtype) + " need " +
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
        // restore the wire encoding (decode/table.cpp): float16 and the affine ones stand for float32
        tlc::Tensor x{payload, h.dtype, got};
        if (!tlc::decode(tlc::Wire{h, payload, plen, n, half.shape}, e->scratch, x, msg)) {
            code = TLC_E_WRONG_TENSOR;
            break;
        }
        if (x.dtype != half.dtype || x.shape != half.shape) {
            code = TLC_E_WRONG_TENSOR;
            msg = half.what + " takes " + tlc::dtype_name(half.dtype) + tlc::dims_str(half.shape) + ", got " +
                  tlc::dtype_name(x.dtype) + tlc::dims_str(x.shape);
            break;
        }
        tlc::Output out;
        std::string err;
        if (!half.engine->run(x.data, out, err)) {
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
            msg = "the result's shape " + tlc::dims_str(out.shape) + " does not fit the wire protocol";
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
        tlc::emit(e, "request " + std::to_string(rid) + " (" + what(cut, flags) + "): " + tlc_strerror(code) + ": " + msg);
    }
}

extern "C" int tlc_edge_handle_from(tlc_edge *e, const void *peer, size_t peer_len, const void *header, size_t header_len,
                                    const void *payload, size_t payload_len, void *reply_header, const void **reply_payload,
                                    size_t *reply_payload_len) {
    if (!e || (!header && header_len) || (!payload && payload_len) || (!peer && peer_len) || !reply_header ||
        !reply_payload || !reply_payload_len)
        return TLC_E_INVALID_ARGUMENT;
    tlc::Frame fr[2] = {{header, header_len}, {payload, payload_len}};
    size_t bytes = header_len + payload_len < header_len ? SIZE_MAX : header_len + payload_len;
    std::string p = peer ? std::string(static_cast<const char *>(peer), peer_len) : std::string();
    try {
        tlc::answer(e, p, fr, 2, bytes, static_cast<unsigned char *>(reply_header), reply_payload, reply_payload_len);
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
