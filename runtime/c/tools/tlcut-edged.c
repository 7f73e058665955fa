/* tlcut-edged: the C edge daemon. Same command-line meaning as `tlcut serve`:
 *   tlcut-edged BUNDLE --cut K [--cut input ...] [--tl on|off|both] [--bind EP]
 *               [--max-message-mb N] [--max-requests N] [--key SECRET --allow DIR | --insecure]
 * Errors at start-up are one line on stderr and exit code 2; a bad request is answered with an
 * ERROR reply, logged, counted, and the daemon keeps serving. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tlcut.h"

static volatile int stop_flag = 0;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void log_line(void *user, const char *line) {
    (void)user;
    time_t t = time(NULL);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime(&t));
    fprintf(stderr, "%s tlcut-edged WARNING %s\n", ts, line);
}

static int die(const char *msg, const char *detail) {
    fprintf(stderr, "tlcut-edged: error: %s%s%s\n", msg, detail && *detail ? ": " : "", detail ? detail : "");
    return 2;
}

static int is_loopback(const char *ep) {
    return !strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9) || !strncmp(ep, "tcp://127.", 10) ||
           !strncmp(ep, "tcp://localhost:", 16) || !strncmp(ep, "tcp://[::1]:", 12);
}

static void usage(FILE *f) {
    fprintf(f, "usage: tlcut-edged BUNDLE --cut K [--cut input ...] [--tl on|off|both] [--bind EP]\n"
               "                   [--max-message-mb N] [--max-requests N] [--key SECRET --allow DIR | --insecure]\n"
               "                   [--version]\n");
}

int main(int argc, char **argv) {
    const char *bundle = NULL, *bind = "tcp://*:5555", *cuts[64], *key = NULL, *allow = NULL;
    int ncuts = 0, tl = -1, insecure = 0;
    unsigned long long max_requests = 0, max_mb = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--version")) { printf("tlcut-edged %s\n", tlc_version()); return 0; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--insecure")) { insecure = 1; continue; }
        if (a[0] == '-' && !v) { usage(stderr); return die("missing value for", a); }
        if (!strcmp(a, "--cut")) { if (ncuts == 64) return die("too many --cut", NULL); cuts[ncuts++] = v; i++; }
        else if (!strcmp(a, "--tl")) {
            tl = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? 0 : !strcmp(v, "both") ? -1 : -2;
            if (tl == -2) return die("--tl must be on, off or both, got", v);
            i++;
        } else if (!strcmp(a, "--bind")) { bind = v; i++; }
        else if (!strcmp(a, "--key")) { key = v; i++; }
        else if (!strcmp(a, "--allow")) { allow = v; i++; }
        else if (!strcmp(a, "--max-message-mb")) { max_mb = strtoull(v, NULL, 10); i++; }
        else if (!strcmp(a, "--max-requests")) { max_requests = strtoull(v, NULL, 10); i++; }
        else if (a[0] == '-') { usage(stderr); return die("unknown option", a); }
        else if (!bundle) bundle = a;
        else { usage(stderr); return die("unexpected argument", a); }
    }
    if (!bundle) { usage(stderr); return die("name the bundle to serve", NULL); }
    if (!ncuts) return die("name the cut(s) to serve with --cut K (or --cut input for the whole model)", NULL);
    if (!key != !allow) return die("CURVE needs both --key (the edge's NAME.key_secret) and --allow DIR", NULL);
    if (!is_loopback(bind) && !key && !insecure)
        return die("refusing plain TCP outside loopback: features of product images would cross unencrypted; "
                   "give --key edge.key_secret --allow DIR (make keys with `tlcut keys`), or --insecure for a lab link", bind);
    if (!key && insecure && !is_loopback(bind))
        fprintf(stderr, "tlcut-edged: warning: plain TCP on %s: the link is neither encrypted nor authenticated (--insecure)\n", bind);
    if (!max_mb) return die("--max-message-mb must be at least 1", NULL);

    tlc_edge *edge = NULL;
    int rc = tlc_edge_create(bundle, &edge);
    if (rc) {
        char m[512];
        snprintf(m, sizeof m, "bundle '%s' does not exist or is incomplete (no manifest.json); create it with `tlcut export MODEL -o %s`", bundle, bundle);
        return die(m, NULL);
    }
    for (int i = 0; i < ncuts; i++) {
        rc = tlc_edge_add_cut(edge, cuts[i], !strcmp(cuts[i], "input") ? 0 : tl);
        if (rc) {
            int code = die(tlc_edge_last_error(edge), NULL);
            tlc_edge_destroy(edge);
            return code;
        }
    }
    if (key && (rc = tlc_edge_set_curve(edge, key, allow))) {
        int code = die(tlc_edge_last_error(edge), NULL);
        tlc_edge_destroy(edge);
        return code;
    }
    tlc_edge_set_max_message(edge, (size_t)max_mb << 20);
    tlc_edge_set_log(edge, log_line, NULL);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    fprintf(stderr, "tlcut-edged %s: serving %d cut(s) of %s on %s (%s)\n", tlc_version(), ncuts, bundle, bind,
            key ? "CURVE" : "plain TCP");
    rc = tlc_edge_serve(edge, bind, &stop_flag, max_requests);
    tlc_edge_stats s;
    tlc_edge_stats_get(edge, &s);
    unsigned long long errs = 0;
    for (int i = 0; i < 10; i++) errs += s.errors[i];
    fprintf(stderr, "tlcut-edged: stopped after %llu messages: %llu results, %llu errors\n",
            (unsigned long long)s.messages, (unsigned long long)s.results, errs);
    if (rc) {
        int code = die(tlc_edge_last_error(edge), NULL);
        tlc_edge_destroy(edge);
        return code;
    }
    tlc_edge_destroy(edge);
    return 0;
}
