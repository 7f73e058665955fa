/* tlcut-edged: the C edge daemon. Same command-line meaning as `tlcut serve`:
 *   tlcut-edged BUNDLE --cut K [--cut input ...] [--tl on|off|both] [--bind EP]
 *               [--precision float32|int8] [--threads N]
 *               [--max-message-mb N] [--max-requests N] [--key SECRET --allow DIR | --insecure]
 *   tlcut-edged BUNDLE --plan PLAN [--choice N] [--bind EP] ...
 * --plan takes the cut, the TL, the precision and the threads of the plan's best candidate (or
 * the N-th) for the edge; a --cut, --tl, --precision or --threads that says otherwise is refused,
 * as `tlcut serve --plan` refuses it.
 * Errors at start-up are one line on stderr and exit code 2; a bad request is answered with an
 * ERROR reply, logged, counted, and the daemon keeps serving. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tlcut.h"
#include "../src/plan.h"

static volatile int stop_flag = 0;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

/* The library serializes these calls; they may come from its ZAP thread. */
static void log_line(void *user, const char *line) {
    (void)user;
    time_t t = time(NULL);
    struct tm tm;
    char ts[32] = "";
    if (localtime_r(&t, &tm)) strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s tlcut-edged WARNING %s\n", ts, line);
}

static int die(const char *msg, const char *detail) {
    fprintf(stderr, "tlcut-edged: error: %s%s%s\n", msg, detail && *detail ? ": " : "", detail ? detail : "");
    return 2;
}

/* A whole decimal number in [lo, hi]: no sign, no spaces, no trailing characters, no overflow
 * (strtoull alone takes "-1", " 7" and "7x" without a word). */
static int parse_count(const char *s, unsigned long long lo, unsigned long long hi, unsigned long long *out) {
    if (!s || *s < '0' || *s > '9') return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: tlcut-edged BUNDLE --cut K [--cut input ...] [--tl on|off|both] [--bind EP]\n"
               "                   [--precision float32|int8] [--threads N]\n"
               "                   [--max-message-mb N] [--max-requests N] [--key SECRET --allow DIR | --insecure]\n"
               "       tlcut-edged BUNDLE --plan PLAN [--choice N] [--bind EP] ...  (the plan's cut, TL, precision, threads)\n"
               "                   [--version]\n");
}

/* The edge's settings from the plan; a typed flag that says otherwise is refused (one line, 2). */
static int from_plan(const char *path, const char *bundle, unsigned long long choice, const char **cuts, int *ncuts,
                     int *tl, int tl_given, const char **precision, int precision_given, unsigned long long *threads,
                     int threads_given) {
    static edged_plan plan; /* its strings outlive this call: cuts[0] and precision point into it */
    char err[512], m[768];
    if (edged_read_plan(path, bundle, choice, tlc_engine(), &plan, err, sizeof err)) return die(err, NULL);
    if (plan.unchecked_model)
        fprintf(stderr, "tlcut-edged: warning: plan '%s' does not record its model's sha256; taking it as made for '%s'\n",
                path, bundle);
    const char *what = NULL, *typed = NULL, *says = NULL;
    char typed_n[32], says_n[32];
    int plan_tl = strcmp(plan.cut, "input") ? plan.tl : -1;
    if (*ncuts && (*ncuts != 1 || strcmp(cuts[0], plan.cut))) what = "--cut", typed = cuts[0], says = plan.cut;
    else if (tl_given && *tl != plan_tl && plan_tl != -1) what = "--tl", typed = *tl == 1 ? "on" : *tl == 0 ? "off" : "both", says = plan.tl ? "on" : "off";
    else if (precision_given && *plan.precision && strcmp(*precision, plan.precision)) what = "--precision", typed = *precision, says = plan.precision;
    else if (threads_given && plan.threads && *threads != (unsigned long long)plan.threads) {
        snprintf(typed_n, sizeof typed_n, "%llu", *threads);
        snprintf(says_n, sizeof says_n, "%d", plan.threads);
        what = "--threads", typed = typed_n, says = says_n;
    }
    if (what) {
        snprintf(m, sizeof m, "%s %s disagrees with the plan in '%s', which says %s %s (%s); drop %s, or pick another "
                 "candidate with --choice N", what, typed, path, what, says, plan.label, what);
        return die(m, NULL);
    }
    cuts[0] = plan.cut;
    *ncuts = 1;
    *tl = plan_tl == -1 ? 0 : plan_tl;
    if (*plan.precision) *precision = plan.precision;
    if (plan.threads) *threads = (unsigned long long)plan.threads;
    fprintf(stderr, "tlcut-edged: plan %s%s: %s (cut %s, TL %s, %s on the wire)\n", path,
             choice ? " (a chosen candidate)" : "", plan.label, plan.cut, *tl ? "on" : "off", plan.encoding);
    return 0;
}

int main(int argc, char **argv) {
    const char *bundle = NULL, *bind = "tcp://*:5555", *cuts[64], *key = NULL, *allow = NULL, *precision = "float32";
    const char *plan_path = NULL;
    int ncuts = 0, tl = -1, insecure = 0, tl_given = 0, precision_given = 0, threads_given = 0, choice_given = 0;
    unsigned long long max_requests = 0, max_mb = 256, threads = 0, choice = 0;
    const unsigned long long max_mb_limit = (unsigned long long)(SIZE_MAX >> 20);
    char m[512];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--version")) { printf("tlcut-edged %s\nengine: %s\njpeg: %s\nzstd: %s\n", tlc_version(), tlc_engine(), *tlc_jpeg() ? tlc_jpeg() : "none (built without libturbojpeg)", *tlc_zstd() ? tlc_zstd() : "none (built without libzstd)"); return 0; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--insecure")) { insecure = 1; continue; }
        if (a[0] == '-' && !v) { usage(stderr); return die("missing value for", a); }
        if (!strcmp(a, "--cut")) { if (ncuts == 64) return die("too many --cut", NULL); cuts[ncuts++] = v; i++; }
        else if (!strcmp(a, "--tl")) {
            tl = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? 0 : !strcmp(v, "both") ? -1 : -2;
            if (tl == -2) return die("--tl must be on, off or both, got", v);
            tl_given = 1;
            i++;
        } else if (!strcmp(a, "--precision")) {
            if (strcmp(v, "float32") && strcmp(v, "int8")) return die("--precision must be float32 or int8, got", v);
            precision = v;
            precision_given = 1;
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_count(v, 1, 4096, &threads)) {
                snprintf(m, sizeof m, "--threads must be a whole number from 1 to 4096, got '%s'", v);
                return die(m, NULL);
            }
            threads_given = 1;
            i++;
        } else if (!strcmp(a, "--plan")) { plan_path = v; i++; }
        else if (!strcmp(a, "--choice")) {
            if (!parse_count(v, 1, 1000000, &choice)) {
                snprintf(m, sizeof m, "--choice must be a whole number from 1, got '%s'", v);
                return die(m, NULL);
            }
            choice_given = 1;
            i++;
        } else if (!strcmp(a, "--bind")) { bind = v; i++; }
        else if (!strcmp(a, "--key")) { key = v; i++; }
        else if (!strcmp(a, "--allow")) { allow = v; i++; }
        else if (!strcmp(a, "--max-message-mb")) {
            if (!parse_count(v, 1, max_mb_limit, &max_mb)) {
                snprintf(m, sizeof m, "--max-message-mb must be a whole number from 1 to %llu, got '%s'", max_mb_limit, v);
                return die(m, NULL);
            }
            i++;
        } else if (!strcmp(a, "--max-requests")) {
            if (!parse_count(v, 0, UINT64_MAX, &max_requests)) {
                snprintf(m, sizeof m, "--max-requests must be a whole number (0: no limit), got '%s'", v);
                return die(m, NULL);
            }
            i++;
        }
        else if (a[0] == '-') { usage(stderr); return die("unknown option", a); }
        else if (!bundle) bundle = a;
        else { usage(stderr); return die("unexpected argument", a); }
    }
    if (!bundle) { usage(stderr); return die("name the bundle to serve", NULL); }
    if (plan_path) {
        int rc = from_plan(plan_path, bundle, choice, cuts, &ncuts, &tl, tl_given, &precision, precision_given,
                           &threads, threads_given);
        if (rc) return rc;
    } else if (choice_given) {
        return die("--choice N picks a candidate of --plan PLAN; add --plan", NULL);
    }
    if (!ncuts) return die("name the cut(s) to serve with --cut K (or --cut input for the whole model), or give --plan PLAN", NULL);
    if (!key != !allow) return die("CURVE needs both --key (the edge's NAME.key_secret) and --allow DIR", NULL);

    tlc_edge *edge = NULL;
    int rc = tlc_edge_create(bundle, &edge);
    if (rc) return die(tlc_edge_last_error(NULL), NULL);
    rc = tlc_edge_set_precision(edge, precision);
    if (!rc) rc = tlc_edge_set_threads(edge, (int)threads);
    for (int i = 0; !rc && i < ncuts; i++) rc = tlc_edge_add_cut(edge, cuts[i], !strcmp(cuts[i], "input") ? 0 : tl);
    if (!rc && key) rc = tlc_edge_set_curve(edge, key, allow);
    if (!rc) rc = tlc_edge_set_max_message(edge, (size_t)max_mb << 20);
    if (!rc) rc = tlc_edge_set_insecure(edge, insecure); /* the library refuses plain TCP outside loopback without it */
    if (!rc) rc = tlc_edge_set_log(edge, log_line, NULL);
    if (rc) {
        int code = die(tlc_edge_last_error(edge), NULL);
        tlc_edge_destroy(edge);
        return code;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    fprintf(stderr, "tlcut-edged %s (%s, %s): %d cut(s) of %s loaded; serving on %s (%s) once bound\n", tlc_version(), tlc_engine(),
            precision, ncuts, bundle, bind, key ? "CURVE" : "plain TCP");
    rc = tlc_edge_serve(edge, bind, &stop_flag, max_requests);
    tlc_edge_stats s;
    tlc_edge_stats_get(edge, &s);
    if (!rc || s.messages) {
        unsigned long long errs = 0;
        for (int i = 0; i < 10; i++) errs += s.errors[i];
        fprintf(stderr, "tlcut-edged: stopped after %llu messages: %llu results, %llu errors, %llu connections refused\n",
                (unsigned long long)s.messages, (unsigned long long)s.results, errs, (unsigned long long)s.denied);
    }
    if (rc) {
        int code = die(tlc_edge_last_error(edge), NULL);
        tlc_edge_destroy(edge);
        return code;
    }
    tlc_edge_destroy(edge);
    return 0;
}
