"""Read an NSynth-layout note set (ours or a real NSynth download) as spectrograms and conditions.

Layout: ``ROOT/<split>/examples.json`` maps ``note_str`` to its fields (``pitch``,
``velocity``, ``instrument``, ``instrument_family`` ...) and the audio lives in
``ROOT/<split>/audio/<note_str>.wav`` (16 kHz mono). Sets built since drum kits were added
also carry ``bank`` (0 melodic, 128 kits), ``program`` and, on kit notes, ``drum_kit_str``,
``drum_key_str`` and ``drum_exclusive_class``; older sets and real NSynth read as bank 0 with
``program`` = ``instrument``.

Spectrograms are computed once and kept in ``ROOT/<split>/.spectrograms/<key>.npy``
(float16, ``[N, F, T]``, memory-mapped on later reads); ``key`` hashes the spectral
configuration and the list of notes, so a changed set or front end never reads a stale
cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mars_model.errors import MarsError
from mars_model.spectral import SpectralConfig, SpectralFrontEnd

CONDITION_FIELDS = ("instrument", "instrument_family", "pitch", "velocity")
# Text labels read with a default, for sets built before they existed (and real NSynth).
TEXT_LABEL_DEFAULTS = {"instrument_family_str": "", "drum_kit_str": "", "drum_key_str": "",
                       "drum_exclusive_class": None}  # fmt: skip


class NoteSet(torch.utils.data.Dataset):
    """One split of an NSynth-layout note set.

    Items are dicts: ``spec`` ``[1, F, T]`` float32 normalised log-magnitude, and the
    integer conditions ``instrument``, ``instrument_family``, ``pitch``, ``velocity``.

    Args:
        root: the directory holding the split folders.
        split: ``train``, ``valid`` or ``test`` (any folder name works).
        spectral: the front end (default configuration if omitted).
        limit: keep only the first ``limit`` notes (sorted by name), for quick runs.
        programs: keep only notes of these instruments (the ``instrument`` field: a GM program
            for melodic notes of our sets, 128 + the kit's program for kit notes).
        families: keep only notes of these families, by name (``percussion``) or index.
        banks: keep only notes of these banks (0: melodic programs, 128: drum kits).

    Besides the conditions, ``labels`` holds per note ``bank`` and ``program`` (``[N]`` int
    arrays) and the lists ``instrument_family_str``, ``drum_kit_str``, ``drum_key_str`` and
    ``drum_exclusive_class`` (``""`` or None where a note has none).

    Example::

        drums = NoteSet("data/gm", "train", banks=[128])
        drums.labels["drum_key_str"][:3]   # e.g. ['Acoustic Bass Drum', ...]
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        spectral: SpectralFrontEnd | None = None,
        limit: int | None = None,
        programs: Sequence[int] | None = None,
        families: Sequence[str | int] | None = None,
        banks: Sequence[int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.directory = self.root / split
        self.spectral = spectral or SpectralFrontEnd()
        index = self.directory / "examples.json"
        if not index.is_file():
            raise MarsError(
                f"{self.directory} has no examples.json: not an NSynth-layout split "
                f"(build one with 'mars-synth dataset build -o {self.root}')"
            )
        try:
            examples = json.loads(index.read_text())
        except (OSError, ValueError) as err:
            raise MarsError(f"cannot read {index}: {err}") from None
        if not isinstance(examples, dict):
            raise MarsError(f"{index} must map note names to their fields")
        names = sorted(examples)
        if programs is not None:
            wanted = {int(p) for p in programs}
            names = [n for n in names if int(examples[n].get("instrument", -1)) in wanted]
            if not names:
                raise MarsError(f"{index} has no notes of instruments {sorted(wanted)}")
        if families is not None:
            wanted_f = {str(f) for f in families}
            names = [n for n in names
                     if {str(examples[n].get("instrument_family")),
                         str(examples[n].get("instrument_family_str"))} & wanted_f]  # fmt: skip
            if not names:
                raise MarsError(f"{index} has no notes of families {sorted(wanted_f)}")
        if banks is not None:
            wanted_b = {int(b) for b in banks}
            names = [n for n in names if int(examples[n].get("bank", 0)) in wanted_b]
            if not names:
                raise MarsError(f"{index} has no notes of banks {sorted(wanted_b)}")
        self.note_strs = names[:limit]
        try:
            self.conditions = {
                name: np.array([int(examples[n][name]) for n in self.note_strs], dtype=np.int64)
                for name in CONDITION_FIELDS
            }
        except (KeyError, TypeError, ValueError) as err:
            raise MarsError(f"{index}: a note lacks a valid field {err}") from None
        self.examples = [examples[n] for n in self.note_strs]
        self.labels: dict[str, np.ndarray | list] = {
            "bank": np.array([int(e.get("bank", 0)) for e in self.examples], dtype=np.int64),
            "program": np.array([int(e.get("program", e["instrument"])) for e in self.examples],
                                dtype=np.int64),  # fmt: skip
            **{name: [e.get(name, default) for e in self.examples]
               for name, default in TEXT_LABEL_DEFAULTS.items()},  # fmt: skip
        }
        self._specs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.note_strs)

    def audio_path(self, i: int) -> Path:
        return self.directory / "audio" / f"{self.note_strs[i]}.wav"

    def load_audio(self, i: int) -> np.ndarray:
        """The ``i``-th note as float32 ``[N]`` at the front end's rate."""
        import soundfile

        path = self.audio_path(i)
        try:
            wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
            raise MarsError(f"corrupt or unreadable WAV {path}: {err}") from None
        if rate != self.spectral.config.sample_rate:
            raise MarsError(
                f"{path} is at {rate} Hz; this model works at {self.spectral.config.sample_rate} Hz"
            )
        return wave.mean(axis=1)

    # -- spectrogram cache ----------------------------------------------------------------
    def cache_path(self) -> Path:
        key = hashlib.sha1(
            json.dumps([asdict(self.spectral.config), self.note_strs]).encode()
        ).hexdigest()[:16]
        return self.directory / ".spectrograms" / f"{key}.npy"

    def spectrograms(
        self, progress: Callable[[int], None] | None = None, batch_size: int = 32
    ) -> np.ndarray:
        """All spectrograms as a ``[N, F, T]`` float16 array, computed once and cached on disk."""
        if self._specs is not None:
            return self._specs
        path = self.cache_path()
        if not path.exists():
            self._build_cache(path, progress, batch_size)
        self._specs = np.load(path, mmap_mode="r")
        return self._specs

    def _build_cache(self, path: Path, progress, batch_size: int) -> None:
        cfg: SpectralConfig = self.spectral.config
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        out = np.lib.format.open_memmap(
            partial, mode="w+", dtype=np.float16, shape=(len(self), *cfg.shape)
        )
        for start in range(0, len(self), batch_size):
            idx = range(start, min(start + batch_size, len(self)))
            waves = torch.from_numpy(np.stack([self._fit(self.load_audio(i)) for i in idx]))
            with torch.no_grad():
                out[idx.start : idx.stop] = self.spectral.log_spectrogram(waves).numpy()
            if progress:
                progress(len(idx))
        out.flush()
        del out
        os.replace(partial, path)  # atomic: a cut-off run never leaves a half cache behind

    def _fit(self, wave: np.ndarray) -> np.ndarray:
        n = self.spectral.config.n_samples
        return wave[:n] if len(wave) >= n else np.pad(wave, (0, n - len(wave)))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        spec = torch.from_numpy(np.asarray(self.spectrograms()[i], dtype=np.float32))[None]
        item = {name: torch.tensor(values[i]) for name, values in self.conditions.items()}
        item["spec"] = spec
        return item
