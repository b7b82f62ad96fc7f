"""The ``.mcodec`` bitstream: a 24-byte header, 11-bit packed RVQ indices, a CRC32.

Layout (little-endian)::

    offset size field
    0      4    magic        b"EULR"
    4      1    version      1
    5      1    kbps         6 or 12 (the rate asked for)
    6      1    stages       RVQ stages coded per frame (8 at 6 kbps, 16 at 12 kbps)
    7      1    bits         bits per index (11 for 2048-entry codebooks)
    8      4    sample_rate  rate of the input, and of the decoded output (Hz)
    12     4    length       samples of the input per channel (mono: stereo input is downmixed)
    16     4    frames       latent frames T (66.67 per second at 16 kHz)
    20     4    model_id     first 4 bytes of the SHA-256 of the weight file that encoded it
    24     P    payload      T x stages indices, frame-major (frame 0 stage 0, frame 0 stage 1, ...),
                             each ``bits`` bits MSB first, packed back to back; the last byte is
                             zero-padded. P = ceil(T * stages * bits / 8)
    24+P   4    crc32        zlib.crc32 of every byte before it

A damaged file is refused with one :class:`MarsError` line: a wrong magic, a file shorter
than its header says (truncated), or a checksum mismatch (any flipped bit).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from mars_model.errors import MarsError

MAGIC = b"EULR"
VERSION = 1
HEADER = struct.Struct("<4sBBBBIIII")
HEADER_BYTES = HEADER.size  # 24
CRC_BYTES = 4


@dataclass
class EncodedAudio:
    """What a ``.mcodec`` file holds.

    Args:
        codes: ``[stages, frames]`` integer indices, each below ``2 ** bits``.
        sample_rate: rate of the original input (Hz).
        length: samples of the original input.
        kbps: the rate asked for (6 or 12).
        bits: bits per index.
        model_id: 8 hex digits naming the weights that made ``codes``.
    """

    codes: np.ndarray
    sample_rate: int
    length: int
    kbps: int
    bits: int = 11
    model_id: str = "00000000"

    @property
    def stages(self) -> int:
        return int(self.codes.shape[0])

    @property
    def frames(self) -> int:
        return int(self.codes.shape[1])


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """``[N]`` non-negative integers below ``2 ** bits`` -> ``ceil(N * bits / 8)`` bytes, MSB first."""
    values = np.asarray(indices, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= 1 << bits):
        raise ValueError(
            f"indices must lie in [0, {1 << bits}), got [{values.min()}, {values.max()}]"
        )
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_array = ((values[:, None] >> shifts) & 1).astype(np.uint8).ravel()
    return np.packbits(bit_array).tobytes()


def unpack_indices(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: ``count`` indices ``[count]`` (int64) from ``data``."""
    bit_array = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits]
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))[None]
    return (bit_array.reshape(count, bits).astype(np.int64) * weights).sum(axis=1)


def payload_bytes(frames: int, stages: int, bits: int) -> int:
    return -(-frames * stages * bits // 8)


def to_bytes(encoded: EncodedAudio) -> bytes:
    """Serialise ``encoded`` (see the module docstring for the layout)."""
    model_id = bytes.fromhex(encoded.model_id)
    if len(model_id) != 4:
        raise ValueError(f"model_id must be 8 hex digits, got {encoded.model_id!r}")
    header = HEADER.pack(MAGIC, VERSION, encoded.kbps, encoded.stages, encoded.bits, encoded.sample_rate,
                         encoded.length, encoded.frames, 0)[:-4] + model_id  # fmt: skip
    body = header + pack_indices(np.asarray(encoded.codes).T, encoded.bits)  # frame-major
    return body + struct.pack("<I", zlib.crc32(body))


def from_bytes(data: bytes, name: str = "input") -> EncodedAudio:
    """Parse and verify a ``.mcodec`` file's bytes; :class:`MarsError` (one line) if damaged."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise MarsError(f"{name} is not an EuleroDec .mcodec file (wrong magic bytes)")
    if len(data) < HEADER_BYTES + CRC_BYTES:
        raise MarsError(
            f"{name} is truncated: {len(data)} bytes, shorter than a header ({HEADER_BYTES + CRC_BYTES})"
        )
    _, version, kbps, stages, bits, sample_rate, length, frames, _ = HEADER.unpack_from(data)
    expected = HEADER_BYTES + payload_bytes(frames, stages, bits) + CRC_BYTES
    (stored_crc,) = struct.unpack_from("<I", data, len(data) - CRC_BYTES)
    if zlib.crc32(data[:-CRC_BYTES]) != stored_crc:
        if len(data) < expected:
            raise MarsError(f"{name} is truncated: {len(data)} bytes, its header says {expected}")
        raise MarsError(f"{name} is corrupt: CRC32 checksum mismatch")
    if version != VERSION:
        raise MarsError(f"{name} is .mcodec version {version}; this build reads version {VERSION}")
    if len(data) != expected:
        raise MarsError(f"{name} is malformed: {len(data)} bytes, its header says {expected}")
    payload = data[HEADER_BYTES : HEADER_BYTES + payload_bytes(frames, stages, bits)]
    codes = unpack_indices(payload, frames * stages, bits).reshape(frames, stages).T
    return EncodedAudio(codes=np.ascontiguousarray(codes), sample_rate=sample_rate, length=length,
                        kbps=kbps, bits=bits, model_id=data[20:24].hex())  # fmt: skip
