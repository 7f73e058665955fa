/* tlcut-bench-echo: the bare ZeroMQ baseline of benchmarks/c_edge.py. A ROUTER that answers every
 * message with an 80-byte header frame and a 16-byte payload frame, as an edge answers with four
 * float32 values, doing nothing else; edges' round trips are measured against its. Native, so the
 * baseline carries no interpreter cost of its own. Usage: tlcut-bench-echo ENDPOINT (runs until
 * killed). */
#include <stdio.h>
#include <zmq.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tlcut-bench-echo ENDPOINT\n");
        return 2;
    }
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    if (!s || zmq_bind(s, argv[1])) {
        fprintf(stderr, "tlcut-bench-echo: error: cannot listen on %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 2;
    }
    static const char header[80] = {0}, body[16] = {0};
    zmq_msg_t id, part;
    for (;;) {
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, s, 0) < 0) break;
        int more = zmq_msg_more(&id);
        while (more) {  /* the request's frames, as the edge receives them */
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, s, 0) < 0) break;
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
        }
        zmq_msg_send(&id, s, ZMQ_SNDMORE);
        zmq_send(s, header, sizeof header, ZMQ_SNDMORE);
        zmq_send(s, body, sizeof body, 0);
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 1;
}
