"""The codec model: exact STFT round trip, code shapes and rates, quantizer upkeep, CLI and training."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.bindings.cli import main
from mars_model.codec.config import CodecConfig
from mars_model.codec.model import CodecModel, build_codec
from mars_model.codec.quantization import EMACodebook, ResidualVectorQuantizer
from mars_model.codec.stft import CodecSTFT
from mars_model.weights_io import save_weights
from tests.tiny_models import logged_losses

TINY = CodecConfig(channels=(4, 4, 8), latent_dim=8, heads=2, n_q=16, codebook_size=2048)


def test_stft_analysis_synthesis_is_exact_below_nyquist():
    stft = CodecSTFT(CodecConfig())
    t = torch.arange(4800) / 16000
    freqs = torch.tensor([[110.0, 1234.5, 7000.0], [440.0, 3000.0, 5555.0]])
    # faded in and out: a hard edge would leak into the dropped Nyquist bin
    wav = 0.2 * torch.sin(2 * torch.pi * freqs[:, :, None] * t).sum(1) * torch.hann_window(4800)
    spec = stft.analysis(wav)
    assert spec.shape == (2, 240, 41) and spec.is_complex()
    torch.testing.assert_close(stft.synthesis(spec, 4800), wav, atol=1e-4, rtol=0)


@pytest.mark.parametrize("length", [1, 239, 240, 7680, 16000])
def test_encode_decode_shapes(length):
    model = build_codec(TINY).eval()
    wav = torch.randn(1, length) * 0.1
    codes = model.encode(wav, 8)
    assert codes.shape == (1, 8, model.latent_frames(length))
    assert codes.dtype == torch.int64 and 0 <= int(codes.min()) and int(codes.max()) < 2048
    assert model.decode(codes, length).shape == (1, length)


def test_long_inputs_are_coded_in_chunks_with_the_same_frame_count(monkeypatch):
    monkeypatch.setattr(CodecModel, "CHUNK", 32)
    monkeypatch.setattr(CodecModel, "MARGIN", 16)
    model = build_codec(TINY).eval()
    length = 100 * 240 + 17  # 101 latent frames + 1 -> four chunks
    codes = model.encode(torch.randn(1, length) * 0.1, 16)
    assert codes.shape == (1, 16, 102)
    out = model.decode(codes, length)
    assert out.shape == (1, length) and torch.isfinite(out).all()


def test_dead_codes_are_restarted_from_the_batch():
    book = EMACodebook(16, 2, decay=0.5, dead_threshold=0.05)
    data = torch.randn(64, 2)
    book.update(data, None)  # initialise from the batch
    far = torch.full((64, 2), 100.0) + torch.randn(64, 2)
    for _ in range(8):  # every vector maps to one code; the others decay below the threshold
        book.update(far, book.nearest(far))
    assert int(book.restarts) > 0
    near_far = (book.embed - 100).abs().max(dim=1).values < 10
    assert int(near_far.sum()) >= 8  # restarted codes moved to where the data is


def test_more_stages_quantize_more_finely():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=4, n_q=4, codebook_size=32, decay=0.8)
    data = torch.randn(2, 4, 256)
    rvq.train()
    for _ in range(20):
        rvq(data)
    rvq.eval()
    errors = [float((rvq(data, n)[0] - data).pow(2).mean()) for n in range(1, 5)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 * errors[0]
    codes = rvq.encode(data, 3)
    torch.testing.assert_close(rvq.decode(codes), rvq(data, 3)[0])


@pytest.mark.slow
def test_rates_stay_under_the_limits_on_a_30_s_file(tmp_path):
    weights = tmp_path / "tiny.pt"
    save_weights(weights, "codec", {"codec": TINY.to_dict()}, build_codec(TINY), {"steps": 0})
    rate = 44100
    t = np.arange(30 * rate) / rate
    stereo = np.stack(
        [0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 550 * t)], axis=1
    )
    sf.write(tmp_path / "in.wav", stereo.astype(np.float32), rate)
    for kbps, limit in ((6, 6.5), (12, 12.5)):
        out = tmp_path / f"{kbps}.mcodec"
        assert main(["codec", "encode", str(tmp_path / "in.wav"), "-o", str(out), "--kbps", str(kbps),
                     "--weights", str(weights)]) == 0  # fmt: skip
        assert out.stat().st_size * 8 / 30 / 1000 <= limit
        wav_out = tmp_path / f"{kbps}.wav"
        assert (
            main(["codec", "decode", str(out), "-o", str(wav_out), "--weights", str(weights)]) == 0
        )
        info = sf.info(wav_out)
        assert (info.samplerate, info.frames, info.channels) == (rate, 30 * rate, 1)


def test_decoding_with_other_weights_is_refused(tmp_path, capsys):
    for seed in (0, 1):
        save_weights(
            tmp_path / f"w{seed}.pt", "codec", {"codec": TINY.to_dict()}, build_codec(TINY, seed)
        )
    sf.write(tmp_path / "in.wav", np.zeros(1600, dtype=np.float32), 16000)
    assert main(["codec", "encode", str(tmp_path / "in.wav"), "-o", str(tmp_path / "a.mcodec"),
                 "--weights", str(tmp_path / "w0.pt")]) == 0  # fmt: skip
    capsys.readouterr()
    code = main(["codec", "decode", str(tmp_path / "a.mcodec"), "-o", str(tmp_path / "a.wav"),
                 "--weights", str(tmp_path / "w1.pt")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "same --weights" in err


def _tiny_run_config(music_root) -> dict:
    return {
        "data": {"music_root": str(music_root), "crop": 1920, "crops": 64, "min_rms_db": -60.0},
        "codec": {**TINY.to_dict(), "channels": [4, 4, 8], "strides": [[2, 1], [2, 2]]},
        "loss": {},
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup": 1, "checkpoint_every": 1,
                  "log_every": 1, "seed": 3, "threads": 1},
    }  # fmt: skip


@pytest.mark.slow
def test_training_resumes_on_the_same_trajectory(tmp_path):
    from mars_model.codec.train import export_codec, train_codec
    from mars_model.weights_io import load_codec

    music = tmp_path / "music" / "train"
    music.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        t = np.arange(16000) / 16000
        sf.write(
            music / f"{i}.wav",
            (
                0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.standard_normal(16000)
            ).astype(np.float32),
            16000,
        )
    config = _tiny_run_config(tmp_path / "music")
    train_codec(config, tmp_path / "a", quiet=True)
    train_codec(config, tmp_path / "b", quiet=True, stop_after=2)
    train_codec(config, tmp_path / "b", quiet=True)

    assert len(logged_losses(tmp_path / "a")) == 4
    assert logged_losses(tmp_path / "a") == pytest.approx(logged_losses(tmp_path / "b"), rel=1e-5)
    meta = export_codec(tmp_path / "a", tmp_path / "codec.pt")
    assert meta["steps"] == 4
    model = load_codec(tmp_path / "codec.pt")
    assert model.config.channels == (4, 4, 8)


def test_unreadable_input_and_missing_weights_give_one_line(tmp_path, capsys):
    (tmp_path / "not_audio.wav").write_bytes(b"this is not a WAV file")
    code = main(
        ["codec", "encode", str(tmp_path / "not_audio.wav"), "-o", str(tmp_path / "x.mcodec")]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "cannot read audio" in err
    sf.write(tmp_path / "in.wav", np.zeros(160, dtype=np.float32), 16000)
    code = main(["codec", "encode", str(tmp_path / "in.wav"), "-o", str(tmp_path / "x.mcodec"),
                 "--weights", str(tmp_path / "missing.pt")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err
