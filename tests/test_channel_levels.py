"""tools/report_channel_levels.py: each channel rendered alone by mars-synth and by FluidSynth, its share of the mix.

The notes come from the test instrument (``drum_kit_source``, which makes every GM program and
drum kit; ``HarmonicNoteSource`` lists no kits, as the shipped model), so these tests check
the tool's mechanics, not the model's balance.
"""

from __future__ import annotations

import math

import mido
import numpy as np
import pytest
from test_render import cc, note, write_midi

from tools.report_channel_levels import (
    channel_shares,
    energy_db,
    keep_channels,
    note_channels,
    table,
)

DRUMS = 9


def _band(path):
    """Two seconds of three channels: a piano chord, a bass line (quieter: CC7 64), drums."""
    events = [(0, mido.Message("program_change", program=0, channel=0)),
              (0, mido.Message("program_change", program=33, channel=1)), *cc(0, 7, 64, ch=1)]  # fmt: skip
    events += note(0, 1800, 60) + note(0, 1800, 64) + note(0, 1800, 67)
    events += [e for i in range(4) for e in note(480 * i, 400, 36 + 2 * i, 90, ch=1)]
    events += [e for i in range(8) for e in note(240 * i, 100, 36 if i % 4 == 0 else 42, 100, ch=DRUMS)]
    return write_midi(path, events)


def _absolute(midi, channel=None):
    """(absolute tick, message) of every message of a type-0 file (of one channel, if given)."""
    now, out = 0, []
    for message in midi.tracks[0]:
        now += message.time
        if channel is None or getattr(message, "channel", None) == channel:
            out.append((now, message.copy(time=0)))
    return out


def test_keep_channels_drops_other_channels_notes_and_keeps_everything_else_in_time(tmp_path):
    midi = mido.MidiFile(_band(tmp_path / "band.mid"))
    assert note_channels(midi) == [0, 1, DRUMS]
    bass = keep_channels(midi, {1})
    assert note_channels(bass) == [1]
    assert _absolute(bass, 1) == _absolute(midi, 1)  # the kept channel's events, at their ticks
    controls = [(t, m) for t, m in _absolute(bass) if m.type in ("program_change", "control_change", "set_tempo")]
    assert controls == [(t, m) for t, m in _absolute(midi) if m.type in ("program_change", "control_change", "set_tempo")]
    assert sum(m.time for m in bass.tracks[0]) == sum(m.time for m in midi.tracks[0])  # same length


def test_energy_adds_over_time_and_stereo_channels():
    t = np.arange(48000) / 48000
    tone = np.sin(2 * np.pi * 1000 * t)[:, None]
    one = energy_db(np.hstack([tone, tone]), 48000)
    assert energy_db(np.hstack([tone, 0 * tone]), 48000) == pytest.approx(one - 10 * math.log10(2), abs=1e-6)
    assert energy_db(np.vstack([np.hstack([tone, tone])] * 2), 48000) == pytest.approx(one + 10 * math.log10(2), abs=0.01)
    assert energy_db(np.zeros((100, 2)), 48000) == -300.0


@pytest.fixture
def drums_source(monkeypatch):
    monkeypatch.setenv("MARS_SYNTH_NOTE_SOURCE", "test_engine_harmonic_source:drum_kit_source")


def test_every_channel_gets_a_share_of_both_mixes(tmp_path, drums_source, fluidr3_soundfont):
    shares = channel_shares(_band(tmp_path / "band.mid"), cache_dir=tmp_path / "cache")
    assert [s.channel for s in shares] == [0, 1, DRUMS] and all(s.ours is not None for s in shares)
    assert [s.instrument for s in shares] == ["program 0", "program 33", "kit 0"]
    # Different instruments at different pitches hardly correlate: the channels' energies add
    # up to the mix's, in both renderers.
    for side in ("ours", "fluidsynth"):
        total = sum(10 ** (getattr(s, side) / 10) for s in shares)
        assert 10 * math.log10(total) == pytest.approx(0.0, abs=1.0), side
    text = table(shares, 3.0)
    assert text.count("\n| ") == 4 and "channels within 3 dB of FluidSynth's share" in text


def test_a_single_channel_file_is_the_whole_mix(tmp_path, drums_source, fluidr3_soundfont):
    path = write_midi(tmp_path / "bass.mid", [e for i in range(3) for e in note(480 * i, 400, 40 + i, 90, ch=1)])
    (share,) = channel_shares(path, cache_dir=tmp_path / "cache")
    assert share.ours == pytest.approx(0.0, abs=1e-6) and share.fluidsynth == pytest.approx(0.0, abs=1e-6)


def test_drums_mars_synth_does_not_play_are_skipped_on_both_sides(tmp_path, monkeypatch, fluidr3_soundfont):
    monkeypatch.setenv("MARS_SYNTH_NOTE_SOURCE", "test_engine_harmonic_source:HarmonicNoteSource")  # lists no kits
    shares = channel_shares(_band(tmp_path / "band.mid"), cache_dir=tmp_path / "cache")
    drums = shares[-1]
    assert drums.channel == DRUMS and drums.ours is None and drums.difference is None
    # FluidSynth's mix leaves the drums out too, so the melodic shares still add up to it.
    total = sum(10 ** (s.fluidsynth / 10) for s in shares[:-1])
    assert 10 * math.log10(total) == pytest.approx(0.0, abs=1.0)
    assert "(1 skipped by mars-synth)" in table(shares, 3.0) and "| 10 | kit 0 | skipped |" in table(shares, 3.0)
