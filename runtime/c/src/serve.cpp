// The ZeroMQ loop: a ROUTER socket (with CURVE and its ZAP thread where set), each message
// answered by the request handler (handle.cpp) and sent back to the connection it came from.
#include <zmq.h>

#include <cerrno>
#include <climits>
#include <deque>
#include <new>
#include <thread>

#include "edge.hpp"

using tlc::fail;

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
    if (ep.find("://") == std::string::npos)  // a missing transport, with --insecure too: not a listen failure
        return fail(e, TLC_E_INVALID_ARGUMENT, tlc::plain_tcp_refusal(ep));
    bool local = tlc::is_loopback(ep);
    if (!e->curve && !local && !e->insecure)
        return fail(e, TLC_E_INSECURE, tlc::plain_tcp_refusal(ep));
    if (!e->curve && !local) tlc::emit(e, "plain TCP on " + ep + ": the link is neither encrypted nor authenticated (--insecure)");
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
            zap = std::thread(tlc::zap_loop, zap_sock, e, &zap_stop);
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
            tlc::Frame fr[2] = {};
            for (size_t i = 1; i < msg.parts.size(); i++) fr[i - 1] = {zmq_msg_data(&msg.parts[i]), zmq_msg_size(&msg.parts[i])};
            const void *rp = nullptr;
            size_t rpl = 0;
            try {
                tlc::answer(e, peer, fr, nparts - 1, bytes, rh, &rp, &rpl);
            } catch (const std::bad_alloc &) {  // no reply can be made; the device's retry will ask again
                tlc::emit(e, "out of memory while answering a request; no reply sent");
                continue;
            }
            if (zmq_send(sock, peer.data(), peer.size(), ZMQ_SNDMORE) < 0 || zmq_send(sock, rh, TLC_HEADER_SIZE, ZMQ_SNDMORE) < 0 ||
                zmq_send(sock, rp, rpl, 0) < 0)
                tlc::emit(e, std::string("reply not sent: ") + zmq_strerror(zmq_errno()));
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
