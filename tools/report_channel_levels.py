"""Each channel's share of the mix, mars-synth next to FluidSynth (FluidR3_GM): the balance of a GM file.

    nice -n 10 python -m tools.report_channel_levels examples/gm_band.mid
    python -m tools.report_channel_levels song.mid --wet --tolerance 3

Every channel that plays notes is rendered alone, by ``mars-synth render`` (the product's
command, in this process: a map file mutes the other fifteen channels) and by the FluidSynth
CLI (the same file with the other channels' notes removed, their controllers and program
changes kept), and the whole file by both. A channel's share is its K-weighted energy (both
stereo channels, the whole render) in dB relative to the full mix's; the table gives both
shares and their difference. Renders are dry (``--no-reverb --no-chorus``; ``-R 0 -C 0``)
unless ``--wet``; our master gain is low enough to keep the limiter out.

A channel mars-synth does not play (the drums, with a model that makes none) is reported as
skipped, and FluidSynth's full mix then leaves it out too, so the other channels' shares
compare like with like.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import soundfile

from engine.synth.loudness import k_weighting_power

FLUIDR3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RATE = 48000
DRUM_CHANNEL = 9
#: Our master gain: low enough that the mix never reaches the soft limiter (FluidSynth's default is 0.2).
OUR_GAIN = 0.1
#: A render whose energy is this far under the full mix's counts as silent (a skipped channel).
SILENT_DB = -80.0
TAIL_SECONDS = 2.0


@dataclass(frozen=True)
class ChannelShare:
    """One channel's level relative to the full mix, in dB (``ours`` is ``None`` when mars-synth skips it)."""

    channel: int
    instrument: str
    ours: float | None
    fluidsynth: float

    @property
    def difference(self) -> float | None:
        """Ours minus FluidSynth's share (dB)."""
        return None if self.ours is None else self.ours - self.fluidsynth


def note_channels(midi: mido.MidiFile) -> list[int]:
    """The channels (0-based) with at least one note, ascending."""
    return sorted({m.channel for track in midi.tracks for m in track if m.type == "note_on" and m.velocity > 0})


def instrument_names(midi: mido.MidiFile) -> dict[int, str]:
    """Each channel's first program (``program 33``, or ``kit 0`` on the drum channel)."""
    names: dict[int, str] = {}
    for message in mido.merge_tracks(midi.tracks):
        if message.type == "program_change" and message.channel not in names:
            kind = "kit" if message.channel == DRUM_CHANNEL else "program"
            names[message.channel] = f"{kind} {message.program}"
    return names


def keep_channels(midi: mido.MidiFile, channels: set[int]) -> mido.MidiFile:
    """A copy of ``midi`` whose notes are only those of ``channels`` (every other event kept, timing exact)."""
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat)
    for track in midi.tracks:
        kept, carry = mido.MidiTrack(), 0
        for message in track:
            if message.type in ("note_on", "note_off") and message.channel not in channels:
                carry += message.time
                continue
            kept.append(message.copy(time=message.time + carry))
            carry = 0
        out.tracks.append(kept)
    return out


def energy_db(audio: np.ndarray, rate: int) -> float:
    """K-weighted energy of a whole render (``[frames, channels]``), summed over its channels, in
    dB (re one full-scale sample; -300 for silence)."""
    spectrum = np.abs(np.fft.rfft(np.asarray(audio, np.float64), axis=0)) ** 2
    weights = k_weighting_power(np.fft.rfftfreq(audio.shape[0], 1.0 / rate), rate)
    energy = 2.0 * float(np.sum(spectrum * weights[:, None])) / audio.shape[0]  # Parseval, one-sided
    return 10 * math.log10(energy) if energy > 0 else -300.0


def render_ours(midi: Path, out: Path, mute: set[int], wet: bool, cache_dir: Path | None) -> np.ndarray:
    """``mars-synth render`` of ``midi`` with the ``mute`` channels (0-based) mapped to null."""
    from engine.bindings.cli import main

    args = ["render", str(midi), "-o", str(out), "--quiet", "--gain", str(OUR_GAIN), "--subtype", "float",
            "--sample-rate", str(RATE), "--tail", str(TAIL_SECONDS)]  # fmt: skip
    if not wet:
        args += ["--no-reverb", "--no-chorus"]
    if cache_dir is not None:
        args += ["--cache-dir", str(cache_dir)]
    if mute:
        mapping = out.with_suffix(".yaml")
        mapping.write_text("channels:\n" + "".join(f"  {c + 1}: null\n" for c in sorted(mute)))
        args += ["--map", str(mapping)]
    if main(args) != 0:
        raise RuntimeError(f"mars-synth render failed on {midi}")
    return soundfile.read(out, dtype="float32", always_2d=True)[0]


def render_fluidsynth(midi: Path, out: Path, wet: bool, soundfont: Path = FLUIDR3) -> np.ndarray:
    """The FluidSynth CLI's render of ``midi`` (float WAV, so nothing clips)."""
    dry = [] if wet else ["-R", "0", "-C", "0"]
    subprocess.run(["fluidsynth", "-ni", "-q", "-r", str(RATE), "-O", "float", "-T", "wav", *dry, "-F", str(out),
                    str(soundfont), str(midi)], check=True, stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
    return soundfile.read(out, dtype="float32", always_2d=True)[0]


def channel_shares(midi_path: Path, wet: bool = False, cache_dir: Path | None = None) -> list[ChannelShare]:
    """Every channel's share of the mix in ``mars-synth render`` and in FluidSynth."""
    midi = mido.MidiFile(midi_path)
    channels = note_channels(midi)
    names = instrument_names(midi)
    with tempfile.TemporaryDirectory(prefix="mars-channels-") as tmp:
        work = Path(tmp)
        ours_full = energy_db(render_ours(midi_path, work / "ours.wav", set(), wet, cache_dir), RATE)
        ours: dict[int, float | None] = {}
        for channel in channels:
            alone = energy_db(render_ours(midi_path, work / f"ours-{channel}.wav", set(range(16)) - {channel}, wet,
                                          cache_dir), RATE) - ours_full  # fmt: skip
            ours[channel] = alone if alone > SILENT_DB else None

        def fluidsynth_db(keep: set[int], name: str) -> float:
            path = work / f"{name}.mid"
            keep_channels(midi, keep).save(path)
            return energy_db(render_fluidsynth(path, work / f"{name}.wav", wet), RATE)

        played = {c for c in channels if ours[c] is not None}
        theirs_full = fluidsynth_db(played, "fs")
        return [ChannelShare(c, names.get(c, "kit 0" if c == DRUM_CHANNEL else "program 0"), ours[c],
                             fluidsynth_db({c}, f"fs-{c}") - theirs_full) for c in channels]  # fmt: skip


def table(shares: list[ChannelShare], tolerance: float) -> str:
    """The shares as a markdown table and a line saying how many are within ``tolerance`` dB."""
    rows = ["| channel | instrument | mars-synth | FluidSynth | difference |", "| ---: | --- | ---: | ---: | ---: |"]
    for s in shares:
        ours = "skipped" if s.ours is None else f"{s.ours:+.1f} dB"
        diff = "-" if s.difference is None else f"{s.difference:+.1f} dB"
        rows.append(f"| {s.channel + 1} | {s.instrument} | {ours} | {s.fluidsynth:+.1f} dB | {diff} |")
    compared = [s for s in shares if s.difference is not None]
    within = sum(abs(s.difference) <= tolerance for s in compared)
    rows.append(f"\n{within} of {len(compared)} channels within {tolerance:g} dB of FluidSynth's share"
                + (f" ({len(shares) - len(compared)} skipped by mars-synth)" if len(compared) < len(shares) else ""))  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("midi", type=Path, help="a General MIDI file")
    parser.add_argument("--wet", action="store_true", help="both with their default reverb and chorus")
    parser.add_argument("--tolerance", type=float, default=3.0, help="dB a share may differ by (default 3)")
    parser.add_argument("--cache-dir", type=Path, help="mars-synth's note cache (default: its own)")
    args = parser.parse_args(argv)
    if not FLUIDR3.is_file() or shutil.which("fluidsynth") is None:
        print("error: needs fluidsynth and FluidR3_GM (Debian: fluidsynth fluid-soundfont-gm)", file=sys.stderr)
        return 1
    print(table(channel_shares(args.midi, args.wet, args.cache_dir), args.tolerance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
