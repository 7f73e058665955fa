/* tlc_edge_serve over real ZeroMQ sockets: plain TCP is refused outside loopback unless the
 * caller opts in; a huge message limit does not wrap ZeroMQ's frame limit into a tiny one; the
 * size limit and the frame count are checked in the Python edge's order; with CURVE only listed
 * devices get answers, and the log callback (called from the ZAP thread and the serve loop) is
 * never entered twice at once. Usage: test_serve DATA_DIR [curve]: without "curve", the plain
 * suites; with it, the CURVE suite alone, which exits 77 (ctest: skipped) with the reason where
 * libzmq has no CURVE. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "tlcut.h"

static int failures = 0;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static char bundle[1024];
static void *zctx;

static tlc_edge *edge_with_cut1(void) {
    tlc_edge *e = NULL;
    if (tlc_edge_create(bundle, &e) || tlc_edge_add_cut(e, "1", 0)) { printf("cannot load %s\n", bundle); exit(2); }
    return e;
}

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) || getsockname(s, (struct sockaddr *)&a, &n)) { perror("port"); exit(2); }
    close(s);
    return ntohs(a.sin_port);
}

/* ---- a serving thread --------------------------------------------------------------------- */
typedef struct {
    tlc_edge *edge;
    char endpoint[256];
    volatile int stop;
    int rc;
    pthread_t t;
} server;

static void *serve_main(void *arg) {
    server *s = arg;
    s->rc = tlc_edge_serve(s->edge, s->endpoint, &s->stop, 0);
    return NULL;
}

static void start(server *s, tlc_edge *e, const char *ep) {
    s->edge = e;
    snprintf(s->endpoint, sizeof s->endpoint, "%s", ep);
    s->stop = 0;
    s->rc = -1;
    pthread_create(&s->t, NULL, serve_main, s);
}

static int finish(server *s) {
    s->stop = 1;
    pthread_join(s->t, NULL);
    return s->rc;
}

/* ---- a device ------------------------------------------------------------------------------ */
static void *dealer(const char *ep, const char *client_pub, const char *client_sec, const char *server_pub) {
    void *d = zmq_socket(zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    if (client_pub) {
        zmq_setsockopt(d, ZMQ_CURVE_SERVERKEY, server_pub, 40);
        zmq_setsockopt(d, ZMQ_CURVE_PUBLICKEY, client_pub, 40);
        zmq_setsockopt(d, ZMQ_CURVE_SECRETKEY, client_sec, 40);
    }
    zmq_connect(d, ep);
    return d;
}

/* Send ``n`` frames; wait up to ``ms`` for the two-frame reply with request id ``rid`` (late
 * replies to earlier requests are dropped, as a device does). 1 and its header if it came. */
static int exchange(void *d, const void **frames, const size_t *sizes, int n, uint64_t rid, int ms, tlc_header *reply) {
    for (int i = 0; i < n; i++) zmq_send(d, frames[i], sizes[i], i < n - 1 ? ZMQ_SNDMORE : 0);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        int left = ms - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
        if (left <= 0 || zmq_poll(&it, 1, left) <= 0) return 0;
        unsigned char h[TLC_HEADER_SIZE + 1];
        char body[8192];
        int hn = zmq_recv(d, h, sizeof h, 0), more = 0;
        size_t len = sizeof more;
        zmq_getsockopt(d, ZMQ_RCVMORE, &more, &len);
        while (more) {
            zmq_recv(d, body, sizeof body, 0);
            zmq_getsockopt(d, ZMQ_RCVMORE, &more, &len);
        }
        if (hn == TLC_HEADER_SIZE && tlc_header_parse(h, TLC_HEADER_SIZE, reply) == TLC_OK && reply->request_id == rid) return 1;
    }
}

static int ping(void *d, int ms) {
    tlc_header p = {0}, r;
    p.type = TLC_PING;
    p.request_id = 1;
    unsigned char h[TLC_HEADER_SIZE];
    tlc_header_pack(&p, h, sizeof h);
    const void *f[2] = {h, ""};
    size_t n[2] = {TLC_HEADER_SIZE, 0};
    return exchange(d, f, n, 2, 1, ms, &r) && r.type == TLC_PONG;
}

/* A running edge: wait until it answers a PING. */
static int wait_up(void *d) {
    for (int i = 0; i < 100; i++)
        if (ping(d, 100)) return 1;
    return 0;
}

/* ---- the log callback, checking that it is never entered twice at once -------------------- */
static atomic_int in_log, overlaps, lines, refusals, warnings;
static void log_cb(void *user, const char *line) {
    (void)user;
    if (atomic_exchange(&in_log, 1)) atomic_fetch_add(&overlaps, 1);
    atomic_fetch_add(&lines, 1);
    if (strstr(line, "connection refused")) atomic_fetch_add(&refusals, 1);
    if (strstr(line, "plain TCP on")) atomic_fetch_add(&warnings, 1);
    struct timespec ts = {0, 2000000}; /* 2 ms: a window for a second thread to come in */
    nanosleep(&ts, NULL);
    atomic_store(&in_log, 0);
}

static void plain_tcp_policy(void) {
    char ep[128];
    int port = free_port();
    tlc_edge *e = edge_with_cut1();
    const char *outside[] = {"tcp://0.0.0.0:%d", "tcp://*:%d"};
    for (int i = 0; i < 2; i++) {
        snprintf(ep, sizeof ep, outside[i], port);
        volatile int stop = 0;
        int rc = tlc_edge_serve(e, ep, &stop, 0);
        CHECK(rc == TLC_E_INSECURE && strstr(tlc_edge_last_error(e), "refusing plain TCP on") &&
              strstr(tlc_edge_last_error(e), ep) && strstr(tlc_edge_last_error(e), "--insecure"),
              "%s: %s: %s", ep, tlc_strerror(rc), tlc_edge_last_error(e));
    }
    /* loopback needs no opt-in */
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    volatile int stop = 1;
    CHECK(tlc_edge_serve(e, ep, &stop, 0) == TLC_OK, "loopback: %s", tlc_edge_last_error(e));
    /* the caller may opt in for a lab link; then it serves, and the log says it is plain */
    CHECK(tlc_edge_set_insecure(e, 1) == TLC_OK && tlc_edge_set_insecure(NULL, 1) == TLC_E_INVALID_ARGUMENT, "set_insecure");
    tlc_edge_set_log(e, log_cb, NULL);
    atomic_store(&warnings, 0);
    server s;
    snprintf(ep, sizeof ep, "tcp://0.0.0.0:%d", port);
    start(&s, e, ep);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    void *d = dealer(ep, NULL, NULL, NULL);
    CHECK(wait_up(d), "an insecure edge on 0.0.0.0 answers");
    zmq_close(d);
    CHECK(finish(&s) == TLC_OK, "insecure serve: %s", tlc_edge_last_error(e));
    CHECK(atomic_load(&warnings) == 1, "one plain-TCP warning, got %d", atomic_load(&warnings));
    tlc_edge_destroy(e);
}

static void limits_over_the_wire(const char *dir) {
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s/limits", dir);
    tlc_edge *e = edge_with_cut1();
    /* 4 x SIZE_MAX wrapped ZeroMQ's frame limit to a few kB: larger requests were dropped unanswered */
    CHECK(tlc_edge_set_max_message(e, SIZE_MAX) == TLC_OK, "no limit");
    server s;
    start(&s, e, ep);
    void *d = dealer(ep, NULL, NULL, NULL);
    CHECK(wait_up(d), "edge up");
    static unsigned char big[64 << 10];
    tlc_header q = {0}, r;
    q.type = TLC_REQUEST; q.dtype = TLC_F32; q.rank = 1; q.dims[0] = sizeof big / 4; q.payload_len = sizeof big;
    q.request_id = 3; q.cut_id = 2;
    unsigned char h[TLC_HEADER_SIZE];
    tlc_header_pack(&q, h, sizeof h);
    const void *f[3] = {h, big, big};
    size_t n[3] = {TLC_HEADER_SIZE, sizeof big, sizeof big};
    CHECK(exchange(d, f, n, 2, 3, 5000, &r) && r.type == TLC_ERROR && r.status == TLC_E_WRONG_CUT && r.request_id == 3,
          "a 64 KiB request under an unlimited edge is answered");
    CHECK(finish(&s) == TLC_OK, "serve");
    zmq_close(d);

    /* the size limit comes before the frame count, as in the Python edge */
    tlc_edge_set_max_message(e, 1024);
    start(&s, e, ep);
    d = dealer(ep, NULL, NULL, NULL);
    CHECK(wait_up(d), "edge up");
    n[1] = n[2] = 2000; /* each under ZeroMQ's cut-off (4 x the limit), together over the limit */
    CHECK(exchange(d, f, n, 3, 0, 5000, &r) && r.type == TLC_ERROR && r.status == TLC_E_TOO_LARGE, "three big frames: too large");
    n[1] = n[2] = 8;
    CHECK(exchange(d, f, n, 3, 0, 5000, &r) && r.type == TLC_ERROR && r.status == TLC_E_BAD_FRAME && r.request_id == 0,
          "three small frames: bad frame");
    CHECK(exchange(d, f, n, 1, 0, 5000, &r) && r.type == TLC_ERROR && r.status == TLC_E_BAD_FRAME, "one frame: bad frame");
    CHECK(finish(&s) == TLC_OK, "serve");
    zmq_close(d);
    tlc_edge_destroy(e);
}

static void write_cert(const char *path, const char *pub, const char *sec) {
    FILE *f = fopen(path, "w");
    fprintf(f, "metadata\ncurve\n    public-key = \"%s\"\n", pub);
    if (sec) fprintf(f, "    secret-key = \"%s\"\n", sec);
    fclose(f);
}

static void curve_and_log(const char *dir) {
    char edge_pub[41], edge_sec[41], good_pub[41], good_sec[41], bad_pub[41], bad_sec[41], p[400], allow[300], ep[300];
    zmq_curve_keypair(edge_pub, edge_sec);
    zmq_curve_keypair(good_pub, good_sec);
    zmq_curve_keypair(bad_pub, bad_sec);
    snprintf(allow, sizeof allow, "%s/allow", dir);
    if (mkdir(allow, 0700)) { perror("mkdir"); exit(2); }
    snprintf(p, sizeof p, "%s/good.key", allow);
    write_cert(p, good_pub, NULL);
    snprintf(p, sizeof p, "%s/edge.key_secret", dir);
    write_cert(p, edge_pub, edge_sec);
    tlc_edge *e = edge_with_cut1();
    CHECK(tlc_edge_set_curve(e, "/no/such.key_secret", allow) == TLC_E_NOT_FOUND, "missing secret key file");
    char badz[400];
    snprintf(badz, sizeof badz, "%s/broken.key_secret", dir);
    write_cert(badz, "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~", "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~");
    CHECK(tlc_edge_set_curve(e, badz, allow) == TLC_E_NOT_FOUND && strstr(tlc_edge_last_error(e), "not a CURVE secret key"),
          "a key that is not Z85 is refused when set, not at serve time: %s", tlc_edge_last_error(e));
    CHECK(tlc_edge_set_curve(e, p, allow) == TLC_OK, "set_curve: %s", tlc_edge_last_error(e));
    tlc_edge_set_log(e, log_cb, NULL);
    atomic_store(&overlaps, 0);
    atomic_store(&lines, 0);
    atomic_store(&refusals, 0);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", free_port());
    server s;
    start(&s, e, ep);
    void *good = dealer(ep, good_pub, good_sec, edge_pub);
    CHECK(wait_up(good), "a listed device is answered");
    void *bad = dealer(ep, bad_pub, bad_sec, edge_pub);
    CHECK(!ping(bad, 500), "an unlisted device is not");
    zmq_close(bad);
    /* errors from the serve loop and refusals from the ZAP thread at the same time */
    tlc_header q = {0}, r;
    q.type = TLC_REQUEST; q.cut_id = 1; /* no tensor: an ERROR, logged */
    unsigned char h[TLC_HEADER_SIZE];
    const void *f[2] = {h, ""};
    size_t n[2] = {TLC_HEADER_SIZE, 0};
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    void *bads[8] = {0};
    int answered = 0;
    for (int round = 0;; round++) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 > 1.5) break;
        if (round % 4 == 0) { /* a fresh unlisted connection: one more ZAP refusal */
            int k = (round / 4) % 8;
            if (bads[k]) zmq_close(bads[k]);
            bads[k] = dealer(ep, bad_pub, bad_sec, edge_pub);
        }
        q.request_id = (uint64_t)round + 10;
        tlc_header_pack(&q, h, sizeof h);
        answered += exchange(good, f, n, 2, q.request_id, 1000, &r) && r.type == TLC_ERROR && r.status == TLC_E_WRONG_TENSOR;
    }
    for (int k = 0; k < 8; k++)
        if (bads[k]) zmq_close(bads[k]);
    zmq_close(good);
    CHECK(finish(&s) == TLC_OK, "CURVE serve: %s", tlc_edge_last_error(e));
    tlc_edge_stats st;
    tlc_edge_stats_get(e, &st);
    printf("CURVE: %d errors answered, %d log lines, %d refusals logged, %llu refused\n", answered, atomic_load(&lines),
           atomic_load(&refusals), (unsigned long long)st.denied);
    CHECK(answered > 10 && atomic_load(&refusals) > 2 && st.denied >= (uint64_t)atomic_load(&refusals), "both threads logged");
    CHECK(atomic_load(&overlaps) == 0, "the log callback was entered twice at once %d times", atomic_load(&overlaps));
    tlc_edge_destroy(e);
}

int main(int argc, char **argv) {
    int curve = argc == 3 && !strcmp(argv[2], "curve");
    if (argc != 2 && !curve) { printf("usage: test_serve DATA_DIR [curve]\n"); return 2; }
    if (curve && !zmq_has("curve")) {
        printf("SKIPPED: this libzmq was built without CURVE, so the CURVE suite cannot run\n");
        return 77;
    }
    snprintf(bundle, sizeof bundle, "%s/bundle", argv[1]);
    char dir[] = "/tmp/tlcut-serve-XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 2; }
    zctx = zmq_ctx_new();
    if (curve) {
        curve_and_log(dir);
    } else {
        plain_tcp_policy();
        limits_over_the_wire(dir);
    }
    zmq_ctx_term(zctx);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) printf("could not remove %s\n", dir);
    printf("serve: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
