"""Against a reference: given FluidSynth's own notes, ``render`` plays a MIDI file as FluidSynth does.

The note source renders NSynth-style notes from the SoundFont exactly as the training set is
built (``mars_model.data.build.render_notes``). The engine then plays the demo piano piece -
tempo, pedal, velocities, note lengths all its own - and its loudness envelope must follow
FluidSynth's rendering of the same file (reverb and chorus off) frame by frame. The SoundFont is
FluidR3_GM, the one the playback calibration was measured on, so the calibration (levels,
velocity curve, envelopes, releases) must reproduce FluidSynth's own playing of its notes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.render import RenderSettings, render_to_array
from engine.synth.effects import DRY
from mars_model.api import NoteRequest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class SoundFontNotes:
    """NoteSource: notes rendered by FluidSynth from a SoundFont (the training set's recipe)."""

    sample_rate = 16000
    pitch_range = (21, 108)

    def __init__(self, soundfont: Path) -> None:
        self.soundfont = soundfont
        self.model_id = f"soundfont-{soundfont.stem}"

    def generate(self, requests: list[NoteRequest]) -> np.ndarray:
        from mars_model.data.build import render_notes

        program = next(iter(requests[0].instrument_weights()))
        assert all(next(iter(r.instrument_weights())) == program for r in requests)
        return render_notes(self.soundfont, program, [(r.pitch, r.velocity) for r in requests])


def envelope_db(x: np.ndarray, hop: int) -> np.ndarray:
    frames = len(x) // hop
    return 20 * np.log10(np.sqrt(np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1)) + 1e-6)


@pytest.mark.integration
def test_piano_with_pedal_follows_fluidsynth(fluidr3_soundfont, tmp_path):
    rate = 22050
    midi = EXAMPLES / "piano_pedal.mid"
    ours, report = render_to_array(midi, RenderSettings(sample_rate=rate, progress=False, tail="eot", preset="grand_piano",
                                                         effects=DRY), SoundFontNotes(fluidr3_soundfont))  # fmt: skip
    reference = tmp_path / "fluidsynth.wav"
    subprocess.run([shutil.which("fluidsynth"), "-ni", "-q", "-R", "0", "-C", "0", "-r", str(rate), "-F",
                    str(reference), str(fluidr3_soundfont), str(midi)], check=True, capture_output=True)  # fmt: skip
    theirs, _ = soundfile.read(reference, dtype="float32")
    n = min(ours.shape[1], theirs.shape[0])
    hop = rate // 20  # 50 ms frames
    a, b = envelope_db(ours.mean(axis=0)[:n], hop), envelope_db(theirs.mean(axis=1)[:n], hop)
    sounding = (a > -70) | (b > -70)
    assert report.notes == 93 and report.cache.generated == report.distinct_notes
    assert np.corrcoef(a[sounding], b[sounding])[0, 1] > 0.95
    # Same timing: the envelopes' onsets line up best with no shift.
    da, db = np.diff(np.maximum(a, -70)), np.diff(np.maximum(b, -70))
    shifts = {s: np.corrcoef(np.roll(da, s), db)[0, 1] for s in range(-3, 4)}
    assert max(shifts, key=shifts.get) == 0
