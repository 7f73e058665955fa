// tlcut-edged --plan: see plan.h. The same checks as `tlcut serve --plan` (tlcut/cli/from_plan.py),
// for the edge's side only; the halves themselves are checked when the edge loads them.
#include "plan.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

using json = nlohmann::json;

namespace {

struct Fail {
    std::string msg;
};

json read_json(const std::string &path, const std::string &what) {
    std::ifstream f(path);
    if (!f) throw Fail{"cannot read " + what + " '" + path + "'"};
    try {
        return json::parse(f);
    } catch (const json::exception &) {
        throw Fail{"'" + path + "' is not " + what + " (invalid JSON)"};
    }
}

std::string str_or(const json &j, const char *key, const std::string &dflt) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : dflt;
}

void copy(char *dst, size_t n, const std::string &s) {
    std::snprintf(dst, n, "%s", s.c_str());
}

void read(const char *path, const char *bundle_dir, unsigned long long choice, const char *engine, edged_plan *out) {
    std::string p = path;
    json plan = read_json(p, "a plan written by `tlcut plan -o`");
    std::string fmt = str_or(plan, "format", "");
    if (fmt == "tlcut-plan-tiers")
        throw Fail{"'" + p + "' is a three-tier plan (`tlcut plan --cloud`); the C edge serves a two-tier plan"};
    if (fmt != "tlcut-plan") throw Fail{"'" + p + "' is not a plan written by `tlcut plan -o`"};
    if (!plan.contains("version") || !plan["version"].is_number_integer() ||
        (plan["version"] != 1 && plan["version"] != 2))
        throw Fail{"plan '" + p + "' has a format version this tlcut-edged does not read; make it again with `tlcut plan ... -o " + p + "`"};
    json manifest = read_json(std::string(bundle_dir) + "/manifest.json", "a bundle's manifest");
    std::string sha = manifest.contains("model") ? str_or(manifest["model"], "sha256", "") : "";
    if (!plan.contains("model_sha256") || !plan["model_sha256"].is_string()) {
        out->unchecked_model = 1;
    } else if (plan["model_sha256"].get<std::string>() != sha) {
        throw Fail{"plan '" + p + "' was made for another model than bundle '" + bundle_dir + "' (" +
                   str_or(plan, "model", "?") + "); bench and plan again from this bundle"};
    }
    const json *d = nullptr;
    if (choice == 0) {
        if (!plan.contains("best") || !plan["best"].is_object()) throw Fail{"'" + p + "' is not a plan written by `tlcut plan -o`"};
        d = &plan["best"];
    } else {
        unsigned long long n = 0;
        if (plan.contains("ranking") && plan["ranking"].is_array())
            for (const auto &c : plan["ranking"])
                if (!(c.contains("allowed") && c["allowed"] == false) && ++n == choice) d = &c;
        if (!d)
            throw Fail{"--choice " + std::to_string(choice) + ": the plan ranks " + std::to_string(n) +
                       " allowed candidates; give 1 to " + std::to_string(n) + " (`tlcut plan` prints them in order)"};
    }
    const json &pl = d->contains("placement") ? (*d)["placement"] : *d;
    std::string where = str_or(pl, "where", ""), label = str_or(*d, "name", "?");
    std::string which = choice ? " (candidate " + std::to_string(choice) + ")" : "";
    copy(out->label, sizeof out->label, label);
    if (where == "device")
        throw Fail{"the plan's choice" + which + " is " + label + ": the edge serves nothing; pick another candidate with --choice N"};
    if (d->contains("tiles") && !(*d)["tiles"].is_null())
        throw Fail{"the plan's choice" + which + " is " + label + ", which runs tiles; the C edge serves no tiles: use `tlcut serve --plan`"};
    if (where == "edge") {
        copy(out->cut, sizeof out->cut, "input");
    } else if (where == "split" && pl.contains("cut") && pl["cut"].is_number_integer()) {
        copy(out->cut, sizeof out->cut, std::to_string(pl["cut"].get<long long>()));
    } else {
        throw Fail{"'" + p + "' is not a plan written by `tlcut plan -o` (no placement)"};
    }
    out->tl = pl.contains("tl") && pl["tl"] == true;
    copy(out->encoding, sizeof out->encoding, str_or(pl, "encoding", "raw"));
    json edge = d->contains("engines") && (*d)["engines"].is_object() && (*d)["engines"].contains("edge")
                    ? (*d)["engines"]["edge"] : json::object();
    if (!edge.is_object()) edge = json::object();
    std::string backend = str_or(edge, "backend", ""), mine = std::string(engine).substr(0, std::string(engine).find(' '));
    if (!backend.empty() && backend != mine)
        throw Fail{"the plan's choice" + which + " runs the edge on " + backend + ", and this tlcut-edged has " + mine +
                   ": serve it with `tlcut serve " + bundle_dir + " --plan " + p + "`, or pick a candidate on " + mine +
                   " with --choice N"};
    copy(out->precision, sizeof out->precision, str_or(edge, "precision", ""));
    out->threads = edge.contains("threads") && edge["threads"].is_number_integer() ? edge["threads"].get<int>() : 0;
}

}  // namespace

extern "C" int edged_read_plan(const char *path, const char *bundle_dir, unsigned long long choice, const char *engine,
                               edged_plan *out, char *err, size_t errlen) {
    std::memset(out, 0, sizeof *out);
    try {
        read(path, bundle_dir, choice, engine, out);
        return 0;
    } catch (const Fail &f) {
        std::snprintf(err, errlen, "%s", f.msg.c_str());
    } catch (const std::exception &e) {
        std::snprintf(err, errlen, "'%s' is not a plan written by `tlcut plan -o` (%s)", path, e.what());
    }
    return 2;
}
