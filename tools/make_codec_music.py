"""Make seeded multi-instrument General MIDI songs and render them with FluidSynth (codec training music).

Each seed gives one song: a random key, mode and tempo, a four-chord progression, and
four to six tracks drawn from GM families (bass, chords/pad, arpeggio, melody, a second
lead, drums on channel 10), with velocity and timing variation. Songs are rendered with
the FluidSynth CLI at 16 kHz mono, reverb and chorus off.

Seeds ``0 .. N-1`` are the training songs; seeds from ``--test-seed-base`` (default
100000) are held out for measurement and must never be used for training::

    python tools/make_codec_music.py -o /work/data/codec_music --train 60 --test 4

writes ``OUT/train/song_<seed>.{mid,wav}`` and ``OUT/test/song_<seed>.{mid,wav}``.
Generated audio is data, not source: never commit it.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

TICKS = 480
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
MAJOR, MINOR = [0, 2, 4, 5, 7, 9, 11], [0, 2, 3, 5, 7, 8, 10]
PROGRESSIONS = [[0, 4, 5, 3], [0, 5, 3, 4], [0, 3, 4, 4], [5, 3, 0, 4], [0, 3, 0, 4], [0, 5, 1, 4]]
BASS = [32, 33, 34, 35, 36, 38, 43]
CHORDS = [0, 1, 2, 4, 5, 6, 16, 17, 19, 24, 25, 48, 49, 50, 52, 61, 88, 89, 91]
ARPEGGIO = [0, 4, 6, 8, 10, 11, 12, 13, 24, 25, 26, 45, 46, 107, 108]
LEAD = [40, 41, 42, 56, 57, 60, 64, 65, 66, 68, 69, 71, 73, 74, 75, 22, 80, 81, 27, 29, 30]


def _chord(scale: list[int], degree: int, root: int) -> list[int]:
    """MIDI pitches of the triad on ``degree`` of ``scale`` above ``root``."""
    out = []
    for step in (0, 2, 4):
        d = degree + step
        out.append(root + scale[d % 7] + 12 * (d // 7))
    return out


def make_song(seed: int, seconds: float = 30.0) -> mido.MidiFile:
    """A random but musical GM arrangement about ``seconds`` long (a function of ``seed`` only)."""
    rng = random.Random(seed)
    tempo_bpm = rng.randint(70, 150)
    scale = MAJOR if rng.random() < 0.6 else MINOR
    key = rng.randint(0, 11)
    progression = rng.choice(PROGRESSIONS)
    beats = int(seconds * tempo_bpm / 60)
    bars = max(2, beats // 4)
    song = mido.MidiFile(ticks_per_beat=TICKS)
    events: list[tuple[int, mido.Message]] = []  # (absolute tick, message)

    def note(ch: int, pitch: int, start: float, length: float, vel: int) -> None:
        t0 = int(start * TICKS + rng.randint(-8, 8))
        t1 = int((start + length) * TICKS)
        pitch = max(0, min(127, pitch))
        vel = max(1, min(127, vel + rng.randint(-10, 10)))
        events.append((max(0, t0), mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
        events.append((max(1, t1), mido.Message("note_off", channel=ch, note=pitch, velocity=0)))

    tracks = ["bass", "chords"] + rng.sample(
        ["arpeggio", "melody", "lead2", "drums"], rng.randint(2, 4)
    )
    programs = {"bass": rng.choice(BASS), "chords": rng.choice(CHORDS), "arpeggio": rng.choice(ARPEGGIO),
                "melody": rng.choice(LEAD), "lead2": rng.choice(LEAD)}  # fmt: skip
    channels = {"bass": 0, "chords": 1, "arpeggio": 2, "melody": 3, "lead2": 4, "drums": 9}
    for name, program in programs.items():
        if name in tracks:
            events.append(
                (0, mido.Message("program_change", channel=channels[name], program=program))
            )
            events.append(
                (0, mido.Message("control_change", channel=channels[name], control=91, value=0))
            )
            events.append(
                (0, mido.Message("control_change", channel=channels[name], control=93, value=0))
            )
    base = 48 + key
    melody_pitch = base + 12 + scale[rng.randint(0, 6)]
    for bar in range(bars):
        degree = progression[bar % 4]
        chord = _chord(scale, degree, base)
        t = bar * 4.0
        if "bass" in tracks:
            pattern = rng.choice([[0, 2], [0, 1, 2, 3], [0, 1.5, 2, 3.5], [0]])
            for i, b in enumerate(pattern):
                length = (pattern[i + 1] if i + 1 < len(pattern) else 4) - b
                note(0, chord[0] - 12 + (7 if rng.random() < 0.15 else 0), t + b, length * 0.9, 90)
        if "chords" in tracks:
            style = rng.choice(["hold", "beats", "offbeat"])
            hits = {
                "hold": [(0, 4)],
                "beats": [(i, 0.9) for i in range(4)],
                "offbeat": [(i + 0.5, 0.45) for i in range(4)],
            }
            for start, length in hits[style]:
                for p in chord:
                    note(1, p, t + start, length, 70)
        if "arpeggio" in tracks:
            step = rng.choice([0.5, 0.25])
            for i in range(int(4 / step)):
                p = chord[i % 3] + 12 * (1 + (i // 3) % 2)
                note(2, p, t + i * step, step * 0.9, 65)
        for name, ch in (("melody", 3), ("lead2", 4)):
            if name not in tracks:
                continue
            pos = 0.0
            while pos < 4:
                length = rng.choice([0.5, 0.5, 1, 1, 1.5, 2, 0.25])
                if rng.random() < 0.8:
                    move = rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3])
                    melody_pitch += move
                    melody_pitch = min(max(melody_pitch, base + 7), base + 28)
                    snapped = min(chord + [c + 12 for c in chord] + [c + 24 for c in chord],
                                  key=lambda c, mp=melody_pitch: abs(c - mp)) if rng.random() < 0.4 else melody_pitch  # fmt: skip
                    note(
                        ch,
                        snapped - (12 if name == "lead2" else 0),
                        t + pos,
                        min(length, 4 - pos) * 0.95,
                        85,
                    )
                pos += length
        if "drums" in tracks:
            for i in range(8):
                if i in (0, 4) or rng.random() < 0.15:
                    note(9, 36, t + i * 0.5, 0.25, 100)  # kick
                if i in (2, 6):
                    note(9, 38, t + i * 0.5, 0.25, 90)  # snare
                note(9, rng.choice([42, 42, 42, 46]), t + i * 0.5, 0.2, 60)  # hats
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    events.sort(key=lambda e: (e[0], e[1].type != "note_off"))
    now = 0
    for tick, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=TICKS))
    song.tracks.append(track)
    return song


def render(midi_path: Path, wav_path: Path, soundfont: str) -> None:
    """Render a MIDI file to 16 kHz mono 16-bit WAV with the FluidSynth CLI."""
    stereo = wav_path.with_suffix(".stereo.wav")
    subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", "16000",
                    "-F", str(stereo), soundfont, str(midi_path)], check=True, capture_output=True)  # fmt: skip
    audio, sr = sf.read(stereo, dtype="float32", always_2d=True)
    stereo.unlink()
    mono = audio.mean(axis=1)
    peak = float(np.abs(mono).max()) or 1.0
    if peak > 0.99:
        mono = mono * (0.99 / peak)
    sf.write(wav_path, mono, sr, subtype="PCM_16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=60, help="training songs (seeds 0..N-1)")
    parser.add_argument(
        "--test", type=int, default=4, help="held-out songs (seeds from --test-seed-base)"
    )
    parser.add_argument("--test-seed-base", type=int, default=100000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--soundfont", default=SOUNDFONT)
    args = parser.parse_args(argv)
    jobs = [("train", s) for s in range(args.train)]
    jobs += [("test", args.test_seed_base + s) for s in range(args.test)]
    for split, seed in jobs:
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        mid, wav = folder / f"song_{seed}.mid", folder / f"song_{seed}.wav"
        if wav.exists():
            continue
        make_song(seed, args.seconds).save(mid)
        render(mid, wav, args.soundfont)
        print(f"{split} {wav}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
