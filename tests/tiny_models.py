"""Tiny configurations of the real models, small enough for unit tests to train in seconds."""

from mars_model.autoregressor import ARConfig, build_autoregressor
from mars_model.spectral import SpectralConfig
from mars_model.tokenizer import TokenizerConfig, build_tokenizer

# 1008 samples, n_fft 64, hop 16 -> a 32 x 64 spectrogram.
TINY_SPECTRAL = SpectralConfig(sample_rate=16000, n_fft=64, hop=16, n_samples=1008)
TINY_TOKENIZER = TokenizerConfig(
    cmx=(4, 4), channels=(8, 16), strides=((2, 2),), res_blocks=1, latent_dim=8,
    codebook_size=32, scales=((1, 1), (2, 2), (4, 8)), n_refine=2, pitch_prior=True, spectral=TINY_SPECTRAL,
)  # fmt: skip
TINY_AR = ARConfig(dim=32, depth=2, heads=2, cond_dropout=0.0, n_instruments=8, n_pitches=128)


def tiny_tokenizer(seed: int = 0):
    return build_tokenizer(TINY_TOKENIZER, seed=seed).eval()


def tiny_autoregressor(seed: int = 0):
    q = TINY_TOKENIZER
    return build_autoregressor(TINY_AR, q.scales, q.latent_dim, q.codebook_size, seed=seed).eval()


def tiny_note_set(root, pitches=(60, 61, 62, 63, 64, 65), instruments=(0, 1)):
    """A train split of short harmonic notes for the tiny models (every instrument at every pitch)."""
    import json

    import numpy as np
    import soundfile

    audio = root / "train" / "audio"
    audio.mkdir(parents=True)
    examples, t = {}, np.arange(TINY_SPECTRAL.n_samples) / TINY_SPECTRAL.sample_rate
    for n, (instrument, pitch) in enumerate((i, p) for i in instruments for p in pitches):
        name = f"tiny_{instrument}-{pitch:03d}-100"
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        wave = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 4)) * np.exp(-3 * t)
        soundfile.write(audio / f"{name}.wav", wave.astype(np.float32), TINY_SPECTRAL.sample_rate)
        examples[name] = {"note": n, "instrument": instrument, "instrument_family": instrument,
                          "pitch": pitch, "velocity": 100}  # fmt: skip
    (root / "train" / "examples.json").write_text(json.dumps(examples))


def logged_losses(run_dir) -> list[float]:
    """The loss of every logged step of a training run (``RUN/log.jsonl``)."""
    import json
    from pathlib import Path

    lines = (Path(run_dir) / "log.jsonl").read_text().splitlines()
    return [record["loss"] for record in map(json.loads, lines) if "loss" in record]
