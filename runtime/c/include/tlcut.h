/* tlcut.h: the C edge runtime of tlcut.
 *
 * Serves the tail of a cut model to devices over ZeroMQ, speaking the wire protocol of
 * docs/protocol.md (the same bytes as the Python runtime). One header, one prefix (tlc_),
 * opaque handles, one error scheme: every function that can fail returns an int status,
 * TLC_OK (0) or a code that tlc_strerror() names.
 *
 * Ownership: the caller owns every buffer it passes in; nothing is kept after a call returns.
 * Pointers handed out by the library (tlc_edge_handle's reply payload, tlc_edge_last_error's
 * string) belong to the handle and stay valid until the next call on that handle or its
 * destruction. tlc_version, tlc_strerror and tlc_engine return static strings.
 * tlc_edge_destroy(NULL) is a no-op.
 *
 * Engine: a build links one inference engine (CMake option TLCUT_ENGINE): OpenVINO (any ONNX
 * opset, every protocol dtype as the model declares it, int8 QDQ halves on int8 kernels) or
 * OpenCV DNN (Debian's; ONNX up to opset 12, float32). tlc_engine() says which.
 *
 * Threads: the framing functions (tlc_header_*, tlc_frame_check, tlc_strerror, tlc_version,
 * tlc_engine, tlc_dtype_size) keep no state and may be called from any thread. A tlc_edge is not
 * thread-safe: use each one from one thread at a time (one tlc_edge per thread; separate edges
 * share nothing). While tlc_edge_serve runs, the only other thread that touches the edge is the
 * library's own ZAP thread (with CURVE), which calls the log callback; the library serializes
 * every call of the callback, so it is never entered twice at once, but it may be entered from
 * that thread rather than the one that called tlc_edge_serve.
 */
#ifndef TLCUT_H
#define TLCUT_H

#include <stddef.h>
#include <stdint.h>

#include "tlcut_version.h" /* TLC_VERSION_MAJOR/MINOR/PATCH/STRING, from tlcut/__init__.py */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TLC_EXPORT __declspec(dllexport)
#else
#define TLC_EXPORT __attribute__((visibility("default")))
#endif

#define TLC_PROTOCOL_VERSION 1
#define TLC_BUNDLE_VERSION 2 /* the manifest.json format version this library reads */
#define TLC_HEADER_SIZE 80
#define TLC_MAX_RANK 8
#define TLC_MAX_ERROR_TEXT 4096 /* bytes of message an ERROR reply carries at most */
#define TLC_INPUT_CUT 0xFFFFFFFFu
#define TLC_REPLAY_TABLE 4096 /* connections whose last request id an edge remembers */

/* Message types, dtypes, flags and encodings: docs/protocol.md. */
enum { TLC_REQUEST = 1, TLC_RESULT = 2, TLC_ERROR = 3, TLC_PING = 4, TLC_PONG = 5 };
enum { TLC_F32 = 1, TLC_F16 = 2, TLC_I8 = 3, TLC_U8 = 4, TLC_I32 = 5, TLC_I64 = 6, TLC_F64 = 7 };
/* flags: bit 0 the DeviceTL; bits 8-15 a tiles band (index + 1), which this edge never serves. */
enum { TLC_FLAG_TL = 1, TLC_BAND_MASK = 0xFF00 };
/* Wire encodings: the codes of docs/protocol.md (the one spec). Each is decoded by one function in
 * runtime/c/src/decode/, found through one table keyed by these codes (decode/table.cpp). */
enum { TLC_ENC_RAW = 0, TLC_ENC_FLOAT16 = 1, TLC_ENC_INT8 = 2, TLC_ENC_UINT8 = 3, TLC_ENC_JPEG = 4, TLC_ENC_INT8_ZSTD = 5,
       TLC_ENC_INT4_ZSTD = 6 };

/* Status codes. 1..10 are the protocol's error codes (the status byte of an ERROR reply); 10 comes
 * only from an edge that forwards to a next tier, which this library does not. */
enum {
    TLC_OK = 0,
    TLC_E_BAD_FRAME = 1,
    TLC_E_VERSION = 2,
    TLC_E_BAD_TYPE = 3,
    TLC_E_WRONG_CUT = 4,
    TLC_E_WRONG_TENSOR = 5,
    TLC_E_TOO_LARGE = 6,
    TLC_E_INTERNAL = 7,
    TLC_E_BUSY = 8,
    TLC_E_REPLAY = 9,
    TLC_E_UPSTREAM = 10,
    TLC_E_INVALID_ARGUMENT = 100, /* a NULL or out-of-range argument */
    TLC_E_NOT_FOUND = 101,        /* bundle, cut or file missing */
    TLC_E_ENGINE = 102,           /* the inference engine refused a half */
    TLC_E_TRANSPORT = 103,        /* ZeroMQ failed */
    TLC_E_NO_MEMORY = 104,
    TLC_E_BUNDLE = 105,  /* manifest.json unreadable, damaged, or of another format version */
    TLC_E_INSECURE = 106 /* plain TCP outside loopback without tlc_edge_set_insecure */
};

/* A decoded header: a plain value, filled by tlc_header_parse, read by tlc_header_pack. */
typedef struct tlc_header {
    uint8_t version, type, dtype, rank;
    uint64_t request_id;
    uint32_t cut_id;
    uint16_t flags;
    uint8_t encoding, status;
    uint64_t payload_len;
    float scale;
    int32_t zero_point;
    uint32_t server_us;
    uint32_t dims[TLC_MAX_RANK];
} tlc_header;

/* Library version as "MAJOR.MINOR.PATCH" (static string; equals TLC_VERSION_STRING of the build). */
TLC_EXPORT const char *tlc_version(void);
/* The inference engine this library was built with and its version, e.g. "openvino 2026.4.1" or
 * "opencv 4.6.0" (static string). */
TLC_EXPORT const char *tlc_engine(void);
/* The JPEG decoder this library was built with (encoding 4), e.g. "libjpeg-turbo 2.1.5", or ""
 * where it was built without libturbojpeg: such an edge answers every JPEG with ERROR 5 (static string). */
TLC_EXPORT const char *tlc_jpeg(void);
/* The zstd decoder this library was built with (encodings 5 and 6, int8+zstd and int4+zstd), e.g.
 * "libzstd 1.5.4", or "" where it was built without libzstd: such an edge answers every request in
 * them with ERROR 5 (static string). */
TLC_EXPORT const char *tlc_zstd(void);
/* A short English name for a status code (static string; never NULL). */
TLC_EXPORT const char *tlc_strerror(int status);
/* Bytes per element of a protocol dtype, 0 if unknown. */
TLC_EXPORT size_t tlc_dtype_size(int dtype);

/* Parse and check an 80-byte header: size, magic, version, type, rank, dtype. */
TLC_EXPORT int tlc_header_parse(const void *buf, size_t len, tlc_header *out);
/* Write ``h`` as 80 bytes into ``buf`` (``len`` >= TLC_HEADER_SIZE; ``h->rank`` <= TLC_MAX_RANK). */
TLC_EXPORT int tlc_header_pack(const tlc_header *h, void *buf, size_t len);
/* Check a parsed header against its payload frame: length, and dims x dtype size for tensors. */
TLC_EXPORT int tlc_frame_check(const tlc_header *h, size_t payload_len);

/* ---- the edge: tails of a bundle, and the request handler ---------------------------------- */
typedef struct tlc_edge tlc_edge;

/* Open ``bundle_dir`` (written by `tlcut export`/`tlcut compile`) and read its manifest.json,
 * which must be format "tlcut-bundle", version TLC_BUNDLE_VERSION. No tails are loaded yet. On
 * failure *out is NULL and tlc_edge_last_error(NULL) says why (TLC_E_NOT_FOUND: no bundle there;
 * TLC_E_BUNDLE: damaged manifest or another format version). */
TLC_EXPORT int tlc_edge_create(const char *bundle_dir, tlc_edge **out);
/* Load the tail of cut ``cut`` (an index, the cut's tensor or Keras layer name, or "input" for the
 * whole model) as the manifest lists it: the portable ONNX ("onnx" engine) at the edge's precision
 * (tlc_edge_set_precision; float32 by default). ``tl``: 0 plain, 1 with the EdgeTL, -1 both (the TL
 * tail only where the TL applies and was compiled). Each tail is run once on zeros, so an engine
 * that cannot run it fails here (TLC_E_ENGINE), not per request. TLC_E_NOT_FOUND if the bundle has
 * no such tail at that precision; the message names the `tlcut compile` command that makes it.
 * A RESULT carries the tail's output in the model's own output dtype. */
TLC_EXPORT int tlc_edge_add_cut(tlc_edge *edge, const char *cut, int tl);
/* Which compiled halves the next tlc_edge_add_cut calls load: "float32" (the default) or "int8"
 * (QDQ halves from `tlcut compile BUNDLE --cuts K --precision int8 --calib DATA`). The string is
 * copied. TLC_E_INVALID_ARGUMENT for anything else. */
TLC_EXPORT int tlc_edge_set_precision(tlc_edge *edge, const char *precision);
/* Inference threads of each half the next tlc_edge_add_cut calls load; 0 (the default): the
 * engine's own choice (OpenVINO: every core). With OpenCV the setting is process-wide. */
TLC_EXPORT int tlc_edge_set_threads(tlc_edge *edge, int threads);
/* A REQUEST header for the half served at (``cut_id``, ``flags`` & TLC_FLAG_TL): type, cut_id,
 * flags, dtype, rank, dims and payload_len as that half takes them (request_id 0, raw encoding).
 * TLC_E_WRONG_CUT if the edge does not serve it. */
TLC_EXPORT int tlc_edge_request_header(const tlc_edge *edge, uint32_t cut_id, uint16_t flags, tlc_header *out);
/* Refuse messages over ``bytes`` with TLC_E_TOO_LARGE (default 256 MiB). */
TLC_EXPORT int tlc_edge_set_max_message(tlc_edge *edge, size_t bytes);
/* Answer one request. ``reply_header`` receives TLC_HEADER_SIZE bytes; ``*reply_payload`` points
 * to memory owned by ``edge`` (valid until the next call on it). Returns TLC_OK when a reply was
 * made, a RESULT, ERROR or PONG: a bad request is answered, not returned as a failure. */
TLC_EXPORT int tlc_edge_handle(tlc_edge *edge, const void *header, size_t header_len, const void *payload,
                               size_t payload_len, void *reply_header, const void **reply_payload,
                               size_t *reply_payload_len);
/* tlc_edge_handle for a request that came on connection ``peer`` (any bytes naming it, e.g. a
 * ROUTER identity): a REQUEST whose id is not above the last one accepted from that peer gets
 * TLC_E_REPLAY. The edge remembers the last id of TLC_REPLAY_TABLE peers and forgets the one that
 * sent least recently. ``peer`` NULL or ``peer_len`` 0: no replay check, as tlc_edge_handle. */
TLC_EXPORT int tlc_edge_handle_from(tlc_edge *edge, const void *peer, size_t peer_len, const void *header,
                                    size_t header_len, const void *payload, size_t payload_len, void *reply_header,
                                    const void **reply_payload, size_t *reply_payload_len);
/* Serve on ``endpoint`` (a ZeroMQ ROUTER bind) until *stop becomes non-zero or ``max_messages``
 * (0: no limit) have been answered. Outside loopback (anything but ipc://, inproc://,
 * tcp://127.x.x.x, tcp://localhost, tcp://[::1]) it refuses plain TCP with TLC_E_INSECURE unless
 * CURVE is set (tlc_edge_set_curve) or the caller opted in with tlc_edge_set_insecure. */
TLC_EXPORT int tlc_edge_serve(tlc_edge *edge, const char *endpoint, volatile int *stop, uint64_t max_messages);
/* Encrypt and authenticate with CURVE: ``secret_key_file`` is the edge's NAME.key_secret (from
 * `tlcut keys`), ``allow_dir`` a folder of admitted devices' NAME.key files. tlc_edge_serve then
 * runs a ZAP handler (in a thread of its own) that admits only those keys. */
TLC_EXPORT int tlc_edge_set_curve(tlc_edge *edge, const char *secret_key_file, const char *allow_dir);
/* ``insecure`` non-zero: allow tlc_edge_serve to serve plain TCP outside loopback (a lab link);
 * features then cross unencrypted and unauthenticated, and the log callback says so once. */
TLC_EXPORT int tlc_edge_set_insecure(tlc_edge *edge, int insecure);
/* Counters: messages answered, results, pings, errors by protocol code (index 1..9), and
 * connections the ZAP handler refused. */
typedef struct tlc_edge_stats {
    uint64_t messages, results, pings, errors[10], denied;
} tlc_edge_stats;
TLC_EXPORT int tlc_edge_stats_get(const tlc_edge *edge, tlc_edge_stats *out);
/* Called with one line for every request answered with an ERROR, every connection the ZAP handler
 * refuses, and a plain-TCP warning (``line`` valid during the call). Calls are serialized; see
 * "Threads" above. Set it before tlc_edge_serve, not while it runs. */
typedef void (*tlc_log_fn)(void *user, const char *line);
TLC_EXPORT int tlc_edge_set_log(tlc_edge *edge, tlc_log_fn fn, void *user);
/* What went wrong in the last failing call on ``edge`` (owned by it; "" if nothing). With
 * ``edge`` NULL: why this thread's last tlc_edge_create failed (valid until its next call). */
TLC_EXPORT const char *tlc_edge_last_error(const tlc_edge *edge);
TLC_EXPORT void tlc_edge_destroy(tlc_edge *edge);

#ifdef __cplusplus
}
#endif
#endif /* TLCUT_H */
