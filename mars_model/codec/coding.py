"""Audio in, codes out and back: resampling, downmix and the model, around the bitstream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mars_model.codec.bitstream import EncodedAudio
from mars_model.codec.config import KBPS_CHOICES
from mars_model.codec.model import CodecModel
from mars_model.errors import MarsError


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read any file libsndfile can (WAV, FLAC, OGG ...): ``([L, C] float32, sample_rate)``."""
    import soundfile

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise MarsError(f"cannot read audio {path}: {str(err).splitlines()[0]}") from None
    return audio, int(rate)


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``[L]`` float32 from ``rate_in`` to ``rate_out`` with soxr (HQ); identity if equal."""
    if rate_in == rate_out:
        return wave.astype(np.float32)
    import soxr

    return soxr.resample(wave, rate_in, rate_out, quality="HQ").astype(np.float32)


def encode_audio(model: CodecModel, audio: np.ndarray, sample_rate: int, kbps: int,
                 model_id: str = "00000000") -> EncodedAudio:  # fmt: skip
    """Encode ``audio`` (``[L]`` mono or ``[L, C]``; channels are averaged) at ``kbps``.

    The input is resampled to the codec rate; the header keeps the original rate and length
    so that decoding gives back a file like the input.
    """
    if kbps not in KBPS_CHOICES:
        raise ValueError(f"kbps must be one of {KBPS_CHOICES}, got {kbps}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    wave = resample(np.asarray(mono, dtype=np.float32), sample_rate, model.sample_rate)
    stages = model.config.stages_for(kbps)
    codes = model.encode(torch.from_numpy(wave)[None], stages)[0].numpy()
    return EncodedAudio(codes=codes, sample_rate=sample_rate, length=len(mono), kbps=kbps,
                        bits=model.config.bits_per_code, model_id=model_id)  # fmt: skip


def decode_audio(model: CodecModel, encoded: EncodedAudio) -> tuple[np.ndarray, int]:
    """Decode to ``([length] float32 mono, sample_rate)`` at the input's original rate."""
    if encoded.bits != model.config.bits_per_code or encoded.stages > model.quantizer.n_q:
        raise MarsError(
            f"this codec model cannot decode {encoded.stages} stages of {encoded.bits}-bit codes"
        )
    if encoded.frames < 2:
        raise MarsError(f"malformed codes: {encoded.frames} frames (every file has at least 2)")
    step = model.config.samples_per_frame
    codec_length = (encoded.frames - 1) * step
    codes = torch.from_numpy(encoded.codes.astype(np.int64))[None]
    wave = model.decode(codes, codec_length)[0].numpy()
    wave = resample(wave, model.sample_rate, encoded.sample_rate)
    out = np.zeros(encoded.length, dtype=np.float32)
    n = min(len(wave), encoded.length)
    out[:n] = wave[:n]
    return out, encoded.sample_rate
