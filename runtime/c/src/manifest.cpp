// The bundle: manifest.json (format, version, cuts, artifacts) and the halves it lists, loaded
// behind the engine boundary (engine.hpp), as tlcut/bundle.py reads the same file.
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>

#include "edge.hpp"

using json = nlohmann::json;
using tlc::CutInfo;
using tlc::fail;
using tlc::Half;

namespace {

int dtype_code(const std::string &s) {
    static const std::map<std::string, int> m = {{"float32", TLC_F32}, {"float16", TLC_F16}, {"int8", TLC_I8},
                                                 {"uint8", TLC_U8},    {"int32", TLC_I32},   {"int64", TLC_I64},
                                                 {"float64", TLC_F64}};
    auto it = m.find(s);
    return it == m.end() ? 0 : it->second;
}

int create_fail(int code, const std::string &msg) {
    tlc::create_error = msg;
    return code;
}

// The manifest's cuts: what --cut may name, and whether the TL applies at each.
std::vector<CutInfo> read_cuts(const json &m) {
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

// The portable ONNX artifact (kind, cut, tl) at the edge's precision, or nullptr. Batch-1 rows
// only: this edge does not batch, and rows with a "batch" other than 1 are extra tails for one that does.
const json *find_artifact(const tlc_edge *e, const std::string &kind, const json &cut, bool tl) {
    for (const auto &a : e->artifacts)
        if (a.at("kind") == kind && a.at("cut") == cut && a.at("tl") == tl && a.at("engine") == "onnx" &&
            a.at("precision") == e->precision && (!a.contains("batch") || a.at("batch") == 1))
            return &a;
    return nullptr;
}

// Load one artifact as a Half: its input from the manifest, its engine, one run on zeros.
int load_half(tlc_edge *e, const json &a, const std::string &whatis, const std::string &compile_hint, Half &h) {
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

}  // namespace

extern "C" {

int tlc_edge_create(const char *bundle_dir, tlc_edge **out) {
    tlc::create_error.clear();
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

int tlc_edge_add_cut(tlc_edge *e, const char *cut, int tl) {
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
            int rc = load_half(e, *a, tlc::what(uint32_t(c->index), with_tl ? TLC_FLAG_TL : 0), "re-run " + compile, h);
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

int tlc_edge_request_header(const tlc_edge *e, uint32_t cut_id, uint16_t flags, tlc_header *out) {
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

}  // extern "C"
