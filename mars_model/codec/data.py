"""Training crops for the codec: rendered notes and rendered multi-instrument music, held in memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mars_model.config import dataclass_from_dict
from mars_model.errors import MarsError


@dataclass(frozen=True)
class CodecDataConfig:
    """The ``data:`` section of a codec config.

    Args:
        notes_root: an NSynth-layout note set (``mars-synth dataset build``); ``""`` for none.
        notes_split: its split to train on.
        notes: how many notes to draw (seeded) from that split.
        music_root: a folder of music WAVs at the codec rate (``tools/make_codec_music.py``
            writes ``ROOT/train/*.wav``); ``""`` for none.
        music_split: its subfolder to train on.
        crop: samples per training crop (a multiple of the codec's samples per frame).
        crops: crops drawn in total (about half from each source when both are given).
        min_rms_db: crops quieter than this (dBFS RMS) are redrawn.
        seed: seed of the note choice and of the crop table.
    """

    notes_root: str = ""
    notes_split: str = "train"
    notes: int = 3000
    music_root: str = ""
    music_split: str = "train"
    crop: int = 7680
    crops: int = 60000
    min_rms_db: float = -45.0
    seed: int = 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "data") -> CodecDataConfig:
        cfg = dataclass_from_dict(cls, raw, where)
        if not cfg.notes_root and not cfg.music_root:
            raise MarsError(f"{where}: give notes_root, music_root or both")
        return cfg


def read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """A WAV file as mono float32 ``[L]`` at ``sample_rate`` (resampled when needed)."""
    import soundfile

    try:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise MarsError(f"corrupt or unreadable WAV {path}: {err}") from None
    wave = wave.mean(axis=1)
    if rate != sample_rate:
        import soxr

        wave = soxr.resample(wave, rate, sample_rate, quality="VHQ").astype(np.float32)
    return wave


class CropSet:
    """A fixed, seeded table of ``crop``-sample windows over in-memory audio (int16).

    ``len(crop_set)`` crops; :meth:`batch` gathers ``[B, crop]`` float32 by crop index, so the
    data order is a function of the training loop's ``(seed, step)`` alone (resumable).
    """

    def __init__(self, config: CodecDataConfig, sample_rate: int, quiet: bool = True) -> None:
        from tqdm import tqdm

        rng = np.random.default_rng(config.seed)
        sources: dict[str, list[np.ndarray]] = {"notes": [], "music": []}
        if config.notes_root:
            from mars_model.data.noteset import NoteSet

            notes = NoteSet(config.notes_root, config.notes_split)
            pick = np.sort(
                rng.choice(len(notes), size=min(config.notes, len(notes)), replace=False)
            )
            for i in tqdm(pick, desc="codec notes", unit="note", disable=quiet):
                sources["notes"].append(_to_int16(notes.load_audio(int(i))))
        if config.music_root:
            folder = Path(config.music_root) / config.music_split
            files = sorted(folder.glob("*.wav"))
            if not files:
                raise MarsError(f"no WAV files in {folder}; run tools/make_codec_music.py first")
            for path in tqdm(files, desc="codec music", unit="file", disable=quiet):
                sources["music"].append(_to_int16(read_wav(path, sample_rate)))
        self.clips: list[np.ndarray] = []
        table: list[tuple[int, int]] = []
        used = [k for k in ("notes", "music") if sources[k]]
        threshold = 32768.0 * 10 ** (config.min_rms_db / 20)
        for kind in used:
            clips = [c for c in sources[kind] if len(c) >= config.crop]
            first = len(self.clips)
            self.clips += clips
            lengths = np.array([len(c) - config.crop + 1 for c in clips], dtype=np.float64)
            want, tries = config.crops // len(used), 0
            got = 0
            while got < want and tries < 20 * want:
                tries += 1
                clip = int(rng.choice(len(clips), p=lengths / lengths.sum()))
                start = int(rng.integers(lengths[clip]))
                window = clips[clip][start : start + config.crop].astype(np.float32)
                if np.sqrt(np.mean(window**2)) >= threshold:
                    table.append((first + clip, start))
                    got += 1
        if not table:
            raise MarsError(
                "no training crop is loud enough; check the data or lower data.min_rms_db"
            )
        self.table = np.array(table, dtype=np.int64)
        self.crop = config.crop

    def __len__(self) -> int:
        return len(self.table)

    def batch(
        self, indices: np.ndarray, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Crops ``indices`` -> ``{"wav": [B, crop]}`` float32 in [-1, 1]."""
        out = np.stack(
            [self.clips[c][s : s + self.crop] for c, s in self.table[np.asarray(indices)]]
        )
        return {"wav": torch.from_numpy(out.astype(np.float32) / 32768.0).to(device)}


def _to_int16(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)
