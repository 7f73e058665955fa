"""The wire protocol between device and edge: an 80-byte header frame and a raw payload frame.

docs/protocol.md is the specification (the C edge runtime speaks it too); this module is its
Python side, and tests/test_protocol.py checks both against the same fixed byte vectors.

Header, little-endian, 80 bytes::

    off size field        meaning
      0    4 magic        b"TLCT"
      4    1 version      1
      5    1 type         1 REQUEST, 2 RESULT, 3 ERROR, 4 PING, 5 PONG
      6    1 dtype        DTYPES code of the payload elements (0 = none)
      7    1 rank         number of dims used, 0..8
      8    8 request_id   u64 chosen by the device, echoed in the reply
     16    4 cut_id       u32 cut index the tensor belongs to (0xFFFFFFFF: the model input)
     20    2 flags        u16, bit 0: payload went through the DeviceTL; bits 8-15: tiles band + 1
     22    1 encoding     how the payload stands for the tensor: a code of tlcut/encodings/ (0 raw)
     23    1 status       0 ok; for ERROR, an error code (ERRORS)
     24    8 payload_len  u64 bytes in the payload frame
     32    4 scale        f32, affine encodings only (int8, uint8, jpeg)
     36    4 zero_point   i32, affine encodings only
     40    4 server_us    u32, in a RESULT: microseconds the edge spent from receipt to reply
     44    4 reserved     0
     48   32 dims         8 x u32, unused ones 0

Both sides check the magic, version, type, rank and that the payload length equals the product of
the dims times the dtype size. The payload frame holds the tensor's bytes in C order exactly as they lie in memory; for ERROR it
holds a UTF-8 message. No pickle, JSON or Protobuf crosses on the hot path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from tlcut import dtypes, encodings

MAGIC = b"TLCT"
VERSION = 1
HEADER = struct.Struct("<4sBBBBQIHBBQfiII8I")
assert HEADER.size == 80

REQUEST, RESULT, ERROR, PING, PONG = 1, 2, 3, 4, 5
TYPES = {REQUEST: "REQUEST", RESULT: "RESULT", ERROR: "ERROR", PING: "PING", PONG: "PONG"}
INPUT_CUT = 0xFFFFFFFF
FLAG_TL = 1
#: Bits 8-15 of flags: which band of a tiled segment the payload is (band index + 1; 0: not a band).
BAND_SHIFT, BAND_MASK = 8, 0xFF00
MAX_BANDS = 255
#: The flag bits that pick what an edge runs, with the cut id.
KEY_FLAGS = FLAG_TL | BAND_MASK
MAX_RANK = 8

#: name -> code, from the registry of encodings (tlcut/encodings/)
ENCODINGS = {e.name: e.code for e in encodings.ALL}
ENC_RAW, ENC_FLOAT16, ENC_INT8, ENC_UINT8, ENC_JPEG = (ENCODINGS[n] for n in ("raw", "float16", "int8", "uint8", "jpeg"))

DTYPES = dtypes.NAMES
DTYPE_CODES = dtypes.CODES

# Error codes carried in the status byte of an ERROR reply.
E_BAD_FRAME = 1      # truncated, wrong magic, wrong frame count
E_VERSION = 2        # unknown protocol version
E_BAD_TYPE = 3       # message type the receiver does not take
E_WRONG_CUT = 4      # the edge serves another cut (or the TL flag differs)
E_WRONG_TENSOR = 5   # dtype, shape or payload length disagree with what is served
E_TOO_LARGE = 6      # message over the receiver's size limit
E_INTERNAL = 7       # the engine failed on a well-formed request
E_BUSY = 8           # too many requests in flight
E_REPLAY = 9         # a request id not above the last one this connection sent
E_UPSTREAM = 10      # an edge that forwards (three tiers): the next tier did not answer
ERRORS = {E_BAD_FRAME: "bad frame", E_VERSION: "unsupported version", E_BAD_TYPE: "bad message type",
          E_WRONG_CUT: "wrong cut", E_WRONG_TENSOR: "wrong tensor", E_TOO_LARGE: "message too large",
          E_INTERNAL: "internal error", E_BUSY: "busy", E_REPLAY: "replayed request", E_UPSTREAM: "upstream unavailable"}


def band_flags(index: int) -> int:
    """The flags of a request for band ``index`` (0-based) of a tiled segment."""
    if not 0 <= index < MAX_BANDS:
        raise ValueError(f"band {index} is outside 0..{MAX_BANDS - 1}")
    return (index + 1) << BAND_SHIFT


def band_of(flags: int) -> int | None:
    """The band a request's flags name, or None."""
    b = (flags & BAND_MASK) >> BAND_SHIFT
    return b - 1 if b else None


class ProtocolError(Exception):
    """A frame that breaks the protocol; ``code`` is what an ERROR reply carries."""

    def __init__(self, code: int, message: str, header: "Header | None" = None):
        super().__init__(message)
        self.code = code
        self.header = header  # set when the header parsed and a later check failed


@dataclass
class Header:
    type: int
    request_id: int = 0
    cut_id: int = INPUT_CUT
    dtype: str | None = None
    shape: tuple[int, ...] = ()
    payload_len: int = 0
    flags: int = 0
    encoding: int = ENC_RAW
    status: int = 0
    scale: float = 0.0
    zero_point: int = 0
    server_us: int = 0
    version: int = VERSION

    def pack(self) -> bytes:
        if len(self.shape) > MAX_RANK:
            raise ValueError(f"rank {len(self.shape)} exceeds the protocol's {MAX_RANK}")
        dims = list(self.shape) + [0] * (MAX_RANK - len(self.shape))
        code = DTYPE_CODES[self.dtype] if self.dtype else 0
        return HEADER.pack(MAGIC, self.version, self.type, code, len(self.shape), self.request_id, self.cut_id,
                           self.flags, self.encoding, self.status, self.payload_len, self.scale, self.zero_point,
                           min(int(self.server_us), 0xFFFFFFFF), 0, *dims)

    @classmethod
    def unpack(cls, buf) -> "Header":
        if len(buf) != HEADER.size:
            raise ProtocolError(E_BAD_FRAME, f"header is {len(buf)} bytes, expected {HEADER.size}")
        (magic, version, mtype, code, rank, rid, cut, flags, enc, status, plen, scale, zp, server_us, _reserved,
         *dims) = HEADER.unpack(buf)
        if magic != MAGIC:
            raise ProtocolError(E_BAD_FRAME, f"bad magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise ProtocolError(E_VERSION, f"protocol version {version}, this side speaks {VERSION}")
        if mtype not in TYPES:
            raise ProtocolError(E_BAD_TYPE, f"unknown message type {mtype}")
        if rank > MAX_RANK:
            raise ProtocolError(E_BAD_FRAME, f"rank {rank} exceeds {MAX_RANK}")
        if code and code not in DTYPES:
            raise ProtocolError(E_WRONG_TENSOR, f"unknown dtype code {code}")
        return cls(type=mtype, request_id=rid, cut_id=cut, dtype=DTYPES.get(code), shape=tuple(dims[:rank]),
                   payload_len=plen, flags=flags, encoding=enc, status=status, scale=scale, zero_point=zp,
                   server_us=server_us, version=version)


def tensor_frames(mtype: int, array: np.ndarray, request_id: int, cut_id: int = INPUT_CUT, flags: int = 0,
                  server_us: int = 0, encoding: int = ENC_RAW, scale: float = 0.0, zero_point: int = 0) -> list:
    """[header, payload] for a tensor. The payload is the array's own memory (no copy when C-contiguous)."""
    a = np.ascontiguousarray(array)
    h = Header(type=mtype, request_id=request_id, cut_id=cut_id, dtype=a.dtype.name, shape=a.shape,
               payload_len=a.nbytes, flags=flags, server_us=server_us, encoding=encoding, scale=scale,
               zero_point=zero_point)
    return [h.pack(), memoryview(a).cast("B") if a.nbytes else b""]


def encode(array: np.ndarray, encoding: str, *, scale: float | None = None, zero_point: int = 0,
           quality: int | None = None) -> tuple[np.ndarray, int, float, int]:
    """A tensor in a wire encoding: (wire array, encoding code, scale, zero_point) for the header.

    Each encoding is a class in tlcut/encodings/. ``scale`` and ``zero_point`` are the input's own
    pixel mapping, for the encodings that send pixels (uint8, jpeg); ``quality`` is jpeg's (default 90).
    """
    enc = encodings.get(encoding)
    wire, scale, zero_point = enc.encode(array, scale=scale, zero_point=zero_point, quality=quality)
    return wire, enc.code, scale, zero_point


def restore(h: "Header", wire: np.ndarray, served_shape=None) -> np.ndarray:
    """The float32 tensor a wire array stands for; raises ProtocolError where they disagree.

    ``served_shape`` is the input shape of the half that takes it: a JPEG is checked against it
    (from its header, before anything is decoded) and laid out as it says.
    """
    enc = encodings.by_code(h.encoding)
    try:
        if enc is None:
            raise encodings.WireError(f"encoding {h.encoding} does not fit a {wire.dtype} payload")
        return enc.restore(wire, h.scale, h.zero_point, served_shape)
    except encodings.WireError as e:
        raise ProtocolError(E_WRONG_TENSOR, str(e)) from None


def error_frames(request_id: int, code: int, message: str, cut_id: int = INPUT_CUT, server_us: int = 0,
                 flags: int = 0) -> list:
    msg = message.encode("utf-8", "replace")[:4096]
    h = Header(type=ERROR, request_id=request_id, cut_id=cut_id, status=code, payload_len=len(msg), server_us=server_us,
               flags=flags & FLAG_TL)
    return [h.pack(), msg]


def decode(frames) -> tuple[Header, np.ndarray | str | None]:
    """Parse [header, payload]; a tensor comes back as a view of the payload frame (read-only)."""
    if len(frames) != 2:
        raise ProtocolError(E_BAD_FRAME, f"message has {len(frames)} frames, expected 2 (header, payload)")
    h = Header.unpack(_buffer(frames[0]))
    payload = _buffer(frames[1])
    if len(payload) != h.payload_len:
        raise ProtocolError(E_BAD_FRAME, f"payload is {len(payload)} bytes, header says {h.payload_len}", h)
    if h.type == ERROR:
        return h, bytes(payload).decode("utf-8", "replace")
    if h.type in (PING, PONG) or not h.dtype:
        return h, None
    expect = dtypes.nbytes(h.shape, h.dtype)  # Python integers: dims cannot overflow into a match
    if expect != h.payload_len:
        raise ProtocolError(E_WRONG_TENSOR, f"dims {list(h.shape)} of {h.dtype} need {expect} bytes, "
                            f"payload has {h.payload_len}", h)
    return h, as_array(payload, h.dtype, h.shape)


def as_array(buf, dtype: str, shape) -> np.ndarray:
    """A zero-copy view where the buffer is aligned for the dtype; a copy only where it is not."""
    dt = np.dtype(dtype)
    mv = memoryview(buf)
    if dt.itemsize > 1:
        addr = np.frombuffer(mv, dtype=np.uint8).ctypes.data if len(mv) else 0
        if addr % dt.itemsize:
            return np.frombuffer(bytes(mv), dtype=dt).reshape(shape)
    return np.frombuffer(mv, dtype=dt).reshape(shape)


def _buffer(frame):
    """Bytes-like view of a frame: zmq.Frame (copy=False), bytes, or memoryview."""
    b = getattr(frame, "buffer", None)
    return b if b is not None else frame
