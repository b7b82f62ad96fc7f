"""The .mcodec bitstream: exact round trip, damaged files refused in one line, bitrate arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bindings.cli import main
from mars_model.codec.bitstream import (
    CRC_BYTES,
    HEADER_BYTES,
    EncodedAudio,
    from_bytes,
    pack_indices,
    payload_bytes,
    to_bytes,
    unpack_indices,
)
from mars_model.codec.config import CodecConfig
from mars_model.errors import MarsError


def _encoded(frames: int = 37, stages: int = 8, seed: int = 0) -> EncodedAudio:
    codes = np.random.default_rng(seed).integers(0, 2048, size=(stages, frames))
    return EncodedAudio(
        codes=codes, sample_rate=44100, length=12345, kbps=6, bits=11, model_id="0badc0de"
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2047), max_size=200))
def test_pack_unpack_11_bit_round_trip(values):
    data = pack_indices(np.array(values, dtype=np.int64), 11)
    assert len(data) == -(-len(values) * 11 // 8)
    np.testing.assert_array_equal(unpack_indices(data, len(values), 11), values)


def test_packing_is_msb_first_and_dense():
    assert pack_indices(np.array([2047, 0]), 11) == bytes([0xFF, 0xE0, 0x00])
    assert pack_indices(np.array([1]), 11) == bytes([0x00, 0x20])


def test_pack_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match="indices must lie"):
        pack_indices(np.array([2048]), 11)


@pytest.mark.parametrize("stages", [8, 16])
def test_bitstream_round_trip_is_exact(stages):
    enc = _encoded(frames=101, stages=stages)
    data = to_bytes(enc)
    assert len(data) == HEADER_BYTES + payload_bytes(101, stages, 11) + CRC_BYTES
    back = from_bytes(data)
    np.testing.assert_array_equal(back.codes, enc.codes)
    assert (back.sample_rate, back.length, back.kbps, back.bits, back.model_id) == (
        44100,
        12345,
        6,
        11,
        "0badc0de",
    )
    assert to_bytes(back) == data


def test_every_flipped_byte_is_refused():
    data = to_bytes(_encoded(frames=5))
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        with pytest.raises(MarsError) as err:
            from_bytes(bytes(damaged), "f.mcodec")
        message = str(err.value)
        assert "\n" not in message
        assert ("magic" in message) if pos < 4 else ("corrupt" in message or "truncated" in message)


@pytest.mark.parametrize("keep", [0, 3, 10, 27, -1, -5])
def test_truncated_file_is_refused(keep):
    data = to_bytes(_encoded())
    with pytest.raises(MarsError, match="truncated|magic") as err:
        from_bytes(data[:keep], "f.mcodec")
    assert "\n" not in str(err.value)


def test_wrong_magic_is_refused():
    data = b"RIFF" + to_bytes(_encoded())[4:]
    with pytest.raises(MarsError, match="not an EuleroDec .mcodec file"):
        from_bytes(data, "f.mcodec")


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_cli_decode_of_damaged_file_prints_one_line(tmp_path, capsys, damage):
    data = bytearray(to_bytes(_encoded()))
    if damage == "flip":
        data[30] ^= 0xFF
    elif damage == "truncate":
        data = data[:-7]
    else:
        data[:4] = b"OggS"
    path = tmp_path / "bad.mcodec"
    path.write_bytes(bytes(data))
    code = main(["codec", "decode", str(path), "-o", str(tmp_path / "out.wav")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("mars-synth codec: error: ")
    assert "Traceback" not in err
    assert not (tmp_path / "out.wav").exists()


def test_bitrate_arithmetic():
    cfg = CodecConfig()
    assert cfg.samples_per_frame == 240 and cfg.frame_rate == pytest.approx(200 / 3)
    assert (cfg.stages_for(6), cfg.stages_for(12)) == (8, 16)
    assert cfg.payload_bitrate(6) == pytest.approx(5866.67, abs=0.01)
    assert cfg.payload_bitrate(12) == pytest.approx(11733.33, abs=0.01)
    # a 30 s file: 2000 frames + 1 (centred STFT), header and CRC included
    frames = 30 * 16000 // 240 + 1
    for kbps, limit in ((6, 6.5), (12, 12.5)):
        size = HEADER_BYTES + payload_bytes(frames, cfg.stages_for(kbps), 11) + CRC_BYTES
        assert size * 8 / 30 / 1000 <= limit
        assert size * 8 / 30 / 1000 <= kbps  # and under the nominal rate
