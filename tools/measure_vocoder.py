"""Measure the Griffin-Lim vocoder on real notes: quality (SC, LSD) and time per 4 s note.

Usage (what the README table came from)::

    nice -n 10 /work/venv/bin/python tools/measure_vocoder.py --root /work/data/fluidr3

Takes a fixed, seeded sample of test-split notes spread evenly over the instrument families,
rebuilds each from its STFT magnitude with every vocoder setting below, and prints one
markdown table: spectral convergence and log-spectral distance (means over the notes, from
:mod:`mars_model.spectral`) and the median wall time per note at batch 1 and batch 16 with
1 and 2 torch threads. Timings on a shared machine are noisy; the load average before and
after is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mars_model.data.noteset import NoteSet
from mars_model.spectral import SpectralFrontEnd, log_spectral_distance, spectral_convergence


@dataclass(frozen=True)
class Setting:
    """One vocoder configuration to measure."""

    label: str
    init: str
    n_iter: int
    momentum: float = 0.99
    legacy: bool = False  # the torch.stft/istft loop this module replaced, for timing


SETTINGS = (
    Setting("fast GL, random start", "random", 16),
    Setting("fast GL, random start", "random", 32),
    Setting("fast GL, random start", "random", 64),
    Setting("fast GL, random start, old torch.stft/istft loop", "random", 32, legacy=True),
    Setting("classic GL (momentum 0), random start", "random", 32, momentum=0.0),
    Setting("fast GL, phase-locked start", "phase-locked", 0),
    Setting("fast GL, phase-locked start", "phase-locked", 4),
    Setting("fast GL, phase-locked start", "phase-locked", 8),
    Setting("fast GL, phase-locked start", "phase-locked", 16),
    Setting("fast GL, phase-locked start", "phase-locked", 32),
)


def legacy_griffin_lim(
    front: SpectralFrontEnd, mag: torch.Tensor, n_iter: int, momentum: float, seed: int = 0
) -> torch.Tensor:
    """The original loop (random start, public ``stft``/``istft`` each iteration).

    ``mag`` ``[B, F, T]`` -> ``[B, n_samples]``; kept here only to time the old iteration.
    """
    phase = front.initial_phase(mag, init="random", seed=seed)
    spec = torch.polar(torch.ones_like(phase), phase)
    previous = torch.zeros_like(spec)
    for _ in range(n_iter):
        rebuilt = front.stft(front.istft(mag * spec, length=front.config.padded_samples))
        accelerated = rebuilt + momentum * (rebuilt - previous) if momentum else rebuilt
        previous = rebuilt
        spec = accelerated / accelerated.abs().clamp_min(1e-12)
    return front.istft(mag * spec)


def vocoder(front: SpectralFrontEnd, setting: Setting) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[B, F, T]`` magnitudes -> ``[B, N]`` waveform for one setting."""
    if setting.legacy:
        return lambda mag: legacy_griffin_lim(front, mag, setting.n_iter, setting.momentum)
    return lambda mag: front.griffin_lim(
        mag, n_iter=setting.n_iter, momentum=setting.momentum, init=setting.init
    )


def sample_notes(notes: NoteSet, count: int, seed: int) -> list[int]:
    """``count`` note indices, round-robin over the families in a seeded order."""
    rng = random.Random(seed)
    by_family: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(notes.examples):
        by_family[str(example.get("instrument_family_str", example["instrument_family"]))].append(i)
    pools = [rng.sample(members, len(members)) for _, members in sorted(by_family.items())]
    chosen: list[int] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(pool.pop())
    return sorted(chosen)


def median_ms_per_note(
    run: Callable[[torch.Tensor], torch.Tensor], mag: torch.Tensor, repeats: int, threads: int
) -> float:
    """Median wall time (ms) per note of ``run(mag)`` after one warm-up, ``mag`` ``[B, F, T]``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            run(mag)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                run(mag)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times) * 1e3 / mag.shape[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/work/data/fluidr3", help="NSynth-layout note set")
    parser.add_argument("--split", default="test")
    parser.add_argument("--notes", type=int, default=64, help="notes in the quality sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of the note sample")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per cell (median)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to time")
    parser.add_argument("--batches", default="1,16", help="batch sizes to time")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated INIT:ITERATIONS to measure (e.g. random:32,phase-locked:8); "
        "default: every setting",
    )
    args = parser.parse_args(argv)
    settings = [
        s for s in SETTINGS if not args.only or f"{s.init}:{s.n_iter}" in args.only.split(",")
    ]
    if not settings:
        parser.error(f"--only {args.only!r} matches none of the settings")
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]

    front = SpectralFrontEnd()
    notes = NoteSet(args.root, args.split, spectral=front)
    chosen = sample_notes(notes, args.notes, args.seed)
    n = front.config.n_samples
    waves = torch.from_numpy(
        np.stack([np.pad(notes.load_audio(i), (0, n))[:n] for i in chosen]).astype(np.float32)
    )
    mag = front.stft(waves).abs()
    families = sorted({notes.examples[i]["instrument_family_str"] for i in chosen})
    load_before = os.getloadavg()

    rows = []
    for setting in settings:
        run = vocoder(front, setting)
        torch.set_num_threads(1)
        with torch.inference_mode():
            estimate = torch.cat([run(chunk) for chunk in mag.split(16)])
        rebuilt = front.stft(estimate).abs()
        sc = spectral_convergence(mag, rebuilt).mean().item()
        lsd = log_spectral_distance(mag, rebuilt).mean().item()
        times = [
            median_ms_per_note(run, mag[: max(b, 1)], args.repeats, t)
            for b in batches
            for t in threads
        ]
        rows.append((setting, sc, lsd, times))
        print(f"  measured {setting.label}, {setting.n_iter} it", flush=True)

    load_after = os.getloadavg()
    head = " | ".join(f"ms/note b{b} {t}T" for b in batches for t in threads)
    print()
    print(f"| Vocoder | Iter. | SC ↓ | LSD dB ↓ | {head} |")
    print("|---|---:|---:|---:|" + "---:|" * len(batches) * len(threads))
    for setting, sc, lsd, times in rows:
        cells = " | ".join(f"{ms:.0f}" for ms in times)
        print(f"| {setting.label} | {setting.n_iter} | {sc:.3f} | {lsd:.2f} | {cells} |")
    print()
    print(
        f"{len(chosen)} notes of {args.root}/{args.split} (seed {args.seed}; families: "
        f"{', '.join(families)}); medians of {args.repeats} runs after a warm-up; "
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
        f"on {os.cpu_count()} cores; torch {torch.__version__}."
    )


if __name__ == "__main__":
    main()
