// The C edge's handle: its settings, counters, log and errors, and the helpers its parts share.
// The rest of the edge is in parts (edge.hpp): manifest.cpp, security.cpp, handle.cpp, serve.cpp
// and decode/. It answers exactly as runtime/serve.py does: the same checks in the same order, the same codes.
#include <sstream>

#include "edge.hpp"

namespace tlc {

thread_local std::string create_error;

int fail(tlc_edge *e, int code, const std::string &msg) {
    if (e) e->error = msg;
    return code;
}

void emit(tlc_edge *e, const std::string &line) {
    std::lock_guard<std::mutex> lock(e->log_mu);
    if (e->log) e->log(e->log_user, line.c_str());
}

std::string what(uint32_t cut, uint16_t flags) {
    std::string w = cut == TLC_INPUT_CUT ? "the whole model"
                                         : "cut " + std::to_string(cut) + ((flags & TLC_FLAG_TL) ? " + TL" : "");
    if (flags & TLC_BAND_MASK)
        return "band " + std::to_string(((flags & TLC_BAND_MASK) >> 8) - 1) + " of " +
               (cut == TLC_INPUT_CUT ? std::string("the input") : w);
    return w;
}

std::string dims_str(const std::vector<int64_t> &s) {
    std::ostringstream o;
    o << "[";
    for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
    o << "]";
    return o.str();
}

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

using tlc::fail;

extern "C" {

void tlc_edge_destroy(tlc_edge *e) { delete e; }

const char *tlc_edge_last_error(const tlc_edge *e) { return e ? e->error.c_str() : tlc::create_error.c_str(); }

int tlc_edge_set_max_message(tlc_edge *e, size_t bytes) {
    if (!e) return TLC_E_INVALID_ARGUMENT;
    if (bytes < TLC_HEADER_SIZE) return fail(e, TLC_E_INVALID_ARGUMENT, "the message size limit must be at least 80 bytes");
    e->max_message = bytes;
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

int tlc_edge_set_log(tlc_edge *e, tlc_log_fn fn, void *user) {
    if (!e) return TLC_E_INVALID_ARGUMENT;
    std::lock_guard<std::mutex> lock(e->log_mu);
    e->log = fn;
    e->log_user = user;
    return TLC_OK;
}

int tlc_edge_stats_get(const tlc_edge *e, tlc_edge_stats *out) {
    if (!e || !out) return TLC_E_INVALID_ARGUMENT;
    *out = e->stats;
    out->denied = e->denied.load();
    return TLC_OK;
}

const char *tlc_engine(void) { return tlc::engine_name(); }
const char *tlc_jpeg(void) { return tlc::jpeg_decoder(); }
const char *tlc_zstd(void) { return tlc::zstd_decoder(); }

}  // extern "C"
