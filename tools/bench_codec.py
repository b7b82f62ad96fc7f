"""Measure EuleroDec against its real-valued twin and Opus: bitrate, quality on held-out audio, speed.

Held-out material (never trained on):

* notes: ``--notes`` notes drawn (seeded) from the note set's ``test`` split, whose
  (instrument, pitch) conditions are disjoint from ``train``;
* music: the songs in ``MUSIC/test`` rendered from held-out MIDI seeds by
  ``tools/make_codec_music.py`` (seeds from 100000; training used 0 .. 79).

Quality, per item at 16 kHz, averaged: SI-SDR (dB, higher is better), mel distance (mean
|log mel - log mel'|, 80 bands, FFT 1024, hop 256; lower is better), multi-resolution STFT
distance (spectral convergence + log-magnitude L1, FFT 128..1024; lower is better).

Bitrate: the size of real files written from the first 30 s of a held-out song (the
``.mcodec`` header and CRC, the Ogg container for Opus, all included) x 8 / 30 s.
Speed: encode and decode wall time of that 30 s file on one thread, as a multiple of real
time. Opus: ``opusenc --hard-cbr --bitrate K`` (VBR overshoots: 17 kbps measured for
``--bitrate 12`` on our music) then ``opusdec --rate 16000``.

    python tools/bench_codec.py --weights mars_model/weights/eulerodec.pt \\
        --baseline runs/codec_real/real_rvqvae.pt --json runs/bench_codec.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mars_model.codec import bitstream
from mars_model.codec.coding import decode_audio, encode_audio
from mars_model.codec.data import read_wav
from mars_model.codec.losses import MelDistance, mrstft_distance, si_sdr
from mars_model.data.noteset import NoteSet
from mars_model.weights_io import file_hash, load_codec

RATE = 16000


def opus_round_trip(wave: np.ndarray, kbps: int, workdir: Path) -> tuple[np.ndarray, int]:
    """Encode with opusenc at ``kbps`` and decode at 16 kHz: ``(decoded [L], file bytes)``."""
    src, enc, dec = workdir / "in.wav", workdir / "x.opus", workdir / "out.wav"
    sf.write(src, wave, RATE, subtype="PCM_16")
    subprocess.run(
        ["opusenc", "--quiet", "--hard-cbr", "--bitrate", str(kbps), str(src), str(enc)], check=True
    )
    subprocess.run(["opusdec", "--quiet", "--rate", str(RATE), str(enc), str(dec)], check=True)
    out, _ = sf.read(dec, dtype="float32", always_2d=True)
    out = out.mean(axis=1)
    fitted = np.zeros_like(wave)
    fitted[: min(len(out), len(wave))] = out[: len(wave)]
    return fitted, enc.stat().st_size


def codec_round_trip(model, weights: Path, wave: np.ndarray, kbps: int, codes: list | None = None):
    """``(decoded [L], file bytes, encode s, decode s)`` through the real .mcodec bytes.

    ``codes``: if given, the ``[stages, frames]`` indices are appended to it.
    """
    t0 = time.perf_counter()
    encoded = encode_audio(model, wave, RATE, kbps, model_id=file_hash(weights)[:8])
    data = bitstream.to_bytes(encoded)
    t1 = time.perf_counter()
    out, _ = decode_audio(model, bitstream.from_bytes(data))
    t2 = time.perf_counter()
    if codes is not None:
        codes.append(encoded.codes)
    return out, len(data), t1 - t0, t2 - t1


def codebook_usage(codes: list[np.ndarray], size: int) -> tuple[float, float]:
    """Mean over stages of (fraction of the codebook used, perplexity) on held-out codes."""
    stacked = np.concatenate(codes, axis=1)  # [stages, frames]
    used, perplexity = [], []
    for stage in stacked:
        counts = np.bincount(stage, minlength=size).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        used.append((counts > 0).mean())
        perplexity.append(float(np.exp(-(p * np.log(p)).sum())))
    return float(np.mean(used)), float(np.mean(perplexity))


def scores(ref: np.ndarray, est: np.ndarray, mel: MelDistance) -> dict[str, float]:
    r, e = torch.from_numpy(ref)[None], torch.from_numpy(est.astype(np.float32))[None]
    return {
        "si_sdr": float(si_sdr(r, e)[0]),
        "mel": float(mel(r, e)),
        "mrstft": float(mrstft_distance(r, e)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("mars_model/weights/eulerodec.pt"))
    parser.add_argument("--baseline", type=Path, help="the real-valued RVQ-VAE weight file")
    parser.add_argument("--notes-root", type=Path, default=Path("data/fluidr3"))
    parser.add_argument("--notes", type=int, default=48, help="held-out notes to score")
    parser.add_argument("--music", type=Path, default=Path("data/codec_music"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    notes = NoteSet(args.notes_root, "test")
    pick = np.sort(
        np.random.default_rng(7).choice(len(notes), size=min(args.notes, len(notes)), replace=False)
    )
    material = {"notes": [notes.load_audio(int(i)) for i in pick],
                "music": [read_wav(p, RATE) for p in sorted((args.music / "test").glob("*.wav"))]}  # fmt: skip
    if not material["music"]:
        sys.exit(f"no held-out music in {args.music / 'test'}; run tools/make_codec_music.py")
    thirty = material["music"][0][: 30 * RATE]
    if len(thirty) < 30 * RATE:
        sys.exit("the first held-out song is shorter than 30 s")

    systems: dict[str, tuple] = {"EuleroDec (complex)": (load_codec(args.weights), args.weights)}
    if args.baseline:
        systems["real RVQ-VAE"] = (load_codec(args.baseline), args.baseline)
    mel = MelDistance(RATE)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kbps in (6, 12):
            for name, (model, weights) in [*systems.items(), ("Opus", (None, None))]:
                row: dict = {"system": name, "kbps": kbps}
                if model is None:
                    _, size = opus_round_trip(thirty, kbps, work)
                    row.update(bitrate_kbps=size * 8 / 30 / 1000)
                else:
                    codec_round_trip(model, weights, thirty[:RATE], kbps)  # warm-up
                    _, size, t_enc, t_dec = codec_round_trip(model, weights, thirty, kbps)
                    row.update(bitrate_kbps=size * 8 / 30 / 1000, encode_x_realtime=30 / t_enc,
                               decode_x_realtime=30 / t_dec)  # fmt: skip
                all_codes: list[np.ndarray] = []
                for kind, items in material.items():
                    per_item = []
                    for wave in items:
                        if model is None:
                            est, _ = opus_round_trip(wave, kbps, work)
                        else:
                            est = codec_round_trip(model, weights, wave, kbps, all_codes)[0]
                        per_item.append(scores(wave, est, mel))
                    for metric in ("si_sdr", "mel", "mrstft"):
                        row[f"{kind}_{metric}"] = float(np.mean([s[metric] for s in per_item]))
                if all_codes:
                    used, perplexity = codebook_usage(all_codes, model.config.codebook_size)
                    row.update(codes_used=used, code_perplexity=perplexity,
                               train_restarts=int(sum(b.restarts for b in model.quantizer.codebooks)))  # fmt: skip
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    meta = {"notes": len(material["notes"]), "music_files": len(material["music"]),
            "music_seconds": sum(len(m) for m in material["music"]) / RATE, "threads": args.threads}  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(markdown_table(results, meta))
    return 0


def markdown_table(results: list[dict], meta: dict) -> str:
    """The README table: one row per system and rate."""
    lines = [
        f"Held out: {meta['notes']} test-split notes, {meta['music_files']} songs "
        f"({meta['music_seconds']:.0f} s) from held-out MIDI seeds; {meta['threads']} CPU thread(s).",
        "",
        "| system | kbps | measured kbps (30 s file) | notes SI-SDR dB | notes mel | notes MR-STFT "
        "| music SI-SDR dB | music mel | music MR-STFT | encode x RT | decode x RT |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        speed = [
            f"{r[k]:.1f}" if k in r else "-" for k in ("encode_x_realtime", "decode_x_realtime")
        ]
        lines.append(
            f"| {r['system']} | {r['kbps']} | {r['bitrate_kbps']:.2f} | {r['notes_si_sdr']:.2f} | {r['notes_mel']:.3f} "
            f"| {r['notes_mrstft']:.3f} | {r['music_si_sdr']:.2f} | {r['music_mel']:.3f} | {r['music_mrstft']:.3f} "
            f"| {speed[0]} | {speed[1]} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
