"""Write the demo MIDI files under examples/ (deterministic: the same bytes every run).

    python tools/make_examples.py            # writes examples/*.mid

* ``piano_pedal.mid`` (type 0, one channel): a short piano piece, arpeggios and a melody
  over a I-vi-IV-V progression, with the sustain pedal lifted and pressed at each chord
  change (legato pedalling), and a final chord held under the pedal.
* ``gm_band.mid`` (type 1, six tracks): a General MIDI arrangement - electric piano, finger
  bass, strings with volume/expression swells, a lead that starts as a trumpet and changes
  to an alto sax (program change), with pitch bends (one after an RPN 0 bend range of 12
  semitones), modulation-wheel vibrato and pan; drums on channel 10 (skipped by the
  engine with a warning unless mapped); a ritardando through tempo changes at the end.
* ``orchestra_dense.mid`` (type 1, eleven tracks): 68 s of orchestral writing as dense as real
  pieces are for a first render: piano, strings, cello, bass, flute, clarinet, trumpet, horn,
  violin, vibraphone and choir over a four-chord loop in three dynamic levels, so the file needs 185 distinct notes (instrument, pitch, velocity layer), 163 a
  minute (real orchestral and band files need 100-170). The render benchmarks use it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mido

TPB = 480  # ticks per beat


def _track_from_events(events: list[tuple[int, mido.Message | mido.MetaMessage]], name: str) -> mido.MidiTrack:
    """Absolute-tick events -> a track with delta times (stable order for equal ticks)."""
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=TPB))
    return track


def _note(events, ch: int, start: float, beats: float, pitch: int, vel: int) -> None:
    events.append((int(start * TPB), mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
    # Half of the note-offs are velocity-0 note-ons (running-status style), as many files have.
    off = (mido.Message("note_on", channel=ch, note=pitch, velocity=0) if pitch % 2
           else mido.Message("note_off", channel=ch, note=pitch, velocity=64))  # fmt: skip
    events.append((int((start + beats) * TPB) - 1, off))


def piano_pedal() -> mido.MidiFile:
    """The piano piece: 8 bars of 4/4 at 84 bpm plus a held final chord (about 26 s)."""
    ev: list = [(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(84))),
                (0, mido.MetaMessage("time_signature", numerator=4, denominator=4)),
                (0, mido.Message("program_change", channel=0, program=0))]  # fmt: skip
    chords = [(48, [60, 64, 67]), (45, [57, 60, 64]), (41, [57, 60, 65]), (43, [55, 59, 62])] * 2
    melody = [76, 74, 72, 71, 72, 74, 76, 79, 81, 79, 77, 76, 74, 72, 71, 74,
              76, 74, 72, 71, 72, 76, 79, 84, 81, 79, 77, 76, 74, 71, 72, 74]  # fmt: skip
    for bar, (bass, triad) in enumerate(chords):
        t = bar * 4.0
        # Legato pedal: up just after the chord change, down again a moment later.
        ev.append((int(t * TPB) + 10, mido.Message("control_change", channel=0, control=64, value=0)))
        ev.append((int(t * TPB) + 60, mido.Message("control_change", channel=0, control=64, value=127)))
        _note(ev, 0, t, 0.5, bass, 80)
        for i, p in enumerate(triad * 2):
            _note(ev, 0, t + 0.5 + i * 0.5, 0.45, p + (12 if i >= 3 else 0), 56 + 4 * (i % 3))
        for i in range(4):
            _note(ev, 0, t + i, 0.9, melody[bar * 4 + i], 92 if i == 0 else 78)
    end = len(chords) * 4.0
    ev.append((int(end * TPB) + 10, mido.Message("control_change", channel=0, control=64, value=0)))
    ev.append((int(end * TPB) + 60, mido.Message("control_change", channel=0, control=64, value=127)))
    for p, v in ((36, 70), (48, 64), (55, 60), (64, 66), (72, 74)):
        _note(ev, 0, end, 1.0, p, v)  # short notes: the pedal holds them
    ev.append((int((end + 4) * TPB), mido.Message("control_change", channel=0, control=64, value=0)))
    mid = mido.MidiFile(type=0, ticks_per_beat=TPB)
    mid.tracks.append(_track_from_events(ev, "Piano"))
    return mid


def gm_band() -> mido.MidiFile:
    """The band: 8 bars at 112 bpm, slowing to 80 bpm over the last bar (about 19 s)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    bars = 8
    tempo = [(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(112))),
             (0, mido.MetaMessage("time_signature", numerator=4, denominator=4))]  # fmt: skip
    for i, bpm in enumerate((104, 96, 88, 80)):
        tempo.append((int(((bars - 1) * 4 + i) * TPB), mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
    mid.tracks.append(_track_from_events(tempo, "Tempo"))
    roots = [45, 41, 48, 43, 45, 41, 43, 45]  # Am F C G Am F G Am
    quality = {45: [0, 3, 7], 41: [0, 4, 7], 48: [0, 4, 7], 43: [0, 4, 7]}

    def cc(ch, control, value, beat=0.0):
        return (int(beat * TPB), mido.Message("control_change", channel=ch, control=control, value=value))

    # Electric piano, channel 1: off-beat chords, panned a little left.
    ep = [(0, mido.Message("program_change", channel=0, program=4)), cc(0, 10, 40), cc(0, 7, 96)]
    for bar, root in enumerate(roots):
        for beat in (0.5, 1.5, 2.5, 3.5):
            for iv in quality[root]:
                _note(ep, 0, bar * 4 + beat, 0.4, root + 12 + iv, 70)
    mid.tracks.append(_track_from_events(ep, "Electric piano"))
    # Finger bass, channel 2.
    bass = [(0, mido.Message("program_change", channel=1, program=33)), cc(1, 7, 110)]
    for bar, root in enumerate(roots):
        for beat, off, v in ((0, 0, 100), (1.5, 0, 80), (2, 7, 90), (3, 12, 85)):
            _note(bass, 1, bar * 4 + beat, 0.45, root - 12 + off, v)
    mid.tracks.append(_track_from_events(bass, "Bass"))
    # Strings, channel 3: whole-bar pads with expression (CC11) swells, panned right.
    strings = [(0, mido.Message("program_change", channel=2, program=48)), cc(2, 10, 90), cc(2, 7, 80)]
    for bar, root in enumerate(roots):
        for k in range(8):
            strings.append(cc(2, 11, 60 + 8 * k, bar * 4 + k * 0.5))
        for iv in quality[root]:
            _note(strings, 2, bar * 4, 4.0, root + 24 + iv, 64)
    mid.tracks.append(_track_from_events(strings, "Strings"))
    # Lead, channel 4: trumpet for four bars, then a program change to alto sax.
    lead = [(0, mido.Message("program_change", channel=3, program=56)), cc(3, 7, 100)]
    tune = [69, 72, 76, 74, 72, 69, 67, 69, 72, 76, 79, 77, 76, 74, 72, 71]
    for i, p in enumerate(tune):
        _note(lead, 3, i * 2.0, 1.8, p, 96)
    # A +2 semitone scoop into bar 3 with the default range (+/-2).
    for k in range(9):
        lead.append((int((8 + k * 0.05) * TPB), mido.Message("pitchwheel", channel=3, pitch=-8192 + k * 1024)))
    lead.append((int(8.5 * TPB), mido.Message("pitchwheel", channel=3, pitch=0)))
    lead.append((int(16 * TPB) - 5, mido.Message("program_change", channel=3, program=65)))
    # RPN 0 (pitch-bend range) = 12 semitones, then an octave fall at the end of bar 7.
    lead += [cc(3, 101, 0, 16), cc(3, 100, 0, 16), cc(3, 6, 12, 16), cc(3, 38, 0, 16),
             cc(3, 101, 127, 16), cc(3, 100, 127, 16)]  # fmt: skip
    for k in range(17):
        lead.append((int((27 + k * 0.05) * TPB), mido.Message("pitchwheel", channel=3, pitch=-k * 512)))
    lead.append((int(28.9 * TPB), mido.Message("pitchwheel", channel=3, pitch=0)))
    # Modulation-wheel vibrato on the long sax notes.
    for bar in (5, 6):
        lead += [cc(3, 1, 0, bar * 4), cc(3, 1, 90, bar * 4 + 1), cc(3, 1, 0, bar * 4 + 3.9)]
    mid.tracks.append(_track_from_events(lead, "Lead"))
    # Drums, channel 10: kick, snare, hi-hat.
    drums: list = []
    for bar in range(bars):
        for eighth in range(8):
            t = bar * 4 + eighth * 0.5
            _note(drums, 9, t, 0.2, 42, 70)
            if eighth in (0, 4):
                _note(drums, 9, t, 0.2, 36, 110)
            if eighth in (2, 6):
                _note(drums, 9, t, 0.2, 38, 100)
    mid.tracks.append(_track_from_events(drums, "Drums"))
    return mid


def orchestra_dense() -> mido.MidiFile:
    """Dense orchestral texture: 26 bars at 96 bpm (about 68 s), three dynamic levels rising."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.append(_track_from_events([(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(96)))], "Tempo"))
    # Six bars a section over a four-chord loop (root, minor?); the sections grow louder
    # and the last ends on a held C major.
    cadence = [(48, False), (45, True), (41, False), (43, False)]
    levels = [50, 75, 75, 100]  # each section's base velocity
    bars = [(*cadence[bar % 4], vel) for vel in levels for bar in range(6)]
    bars += [(48, False, 100), (48, False, 100)]  # the final C major, held over two bars
    scale = [0, 2, 4, 5, 7, 9, 11]
    parts: dict[str, list] = {}

    def part(name: str, channel: int, program: int) -> list:
        events = [(0, mido.Message("program_change", channel=channel, program=program))]
        parts[name] = events
        return events

    piano, strings, cello = part("Piano", 0, 0), part("Strings", 1, 48), part("Cello", 2, 42)
    bass, flute, clarinet = part("Bass", 3, 33), part("Flute", 4, 73), part("Clarinet", 5, 71)
    trumpet, horn, violin = part("Trumpet", 6, 56), part("Horn", 7, 60), part("Violin", 8, 40)
    vibes, choir = part("Vibraphone", 10, 11), part("Choir", 11, 52)
    for bar, (root, minor, vel) in enumerate(bars):
        t = bar * 4
        section = min(bar // 6, 3)
        chord = [0, 3 if minor else 4, 7]
        accent = 4 if bar % 6 == 3 else 0  # the fourth chord of each section a little louder
        final = bar >= 24
        for i in range(8 if not final else 1):  # piano: rising and falling eighth-note arpeggio
            pitch = root + 12 + chord[[0, 1, 2, 1, 0, 1, 2, 1][i]]
            _note(piano, 0, t + i * 0.5, 0.5 if not final else 8, pitch, vel - 4 + (8 if i == 0 else 0))
        for iv in chord:  # strings: the chord, a whole bar
            _note(strings, 1, t, 4 if not final else 8, root + 24 + iv, vel - 6 + accent)
        _note(cello, 2, t, 2, root, vel - 4)
        _note(cello, 2, t + 2, 2, root + 7, vel - 8)
        for beat in range(4):  # bass: quarter notes, root and fifth
            _note(bass, 3, t + beat, 0.9, root - 12 + (7 if beat % 2 else 0), vel + accent - 2)
        key = root + 24 + (0 if not minor else 3)
        for i in range(4 if section < 2 else 8):  # flute: a scale melody, eighths from section 3 on
            step = (bar * 3 + i) % 7
            pitch = 72 + scale[step]
            dur = 1.0 if section < 2 else 0.5
            _note(flute, 4, t + i * dur, dur * 0.95, pitch, vel + 4)
        _note(clarinet, 5, t, 2, key - 12 + 4, vel - 10)  # clarinet: a slow countermelody
        _note(clarinet, 5, t + 2, 2, key - 12 + (2 if bar % 2 else 5), vel - 10)
        if section == 3:  # trumpet fanfare in the last section: dotted rhythm on the chord tones
            for start, dur, iv in ((0, 0.75, 0), (0.75, 0.25, 4), (1, 1, 7), (3, 1, 12)):
                _note(trumpet, 6, t + start, dur * 0.9, root + 12 + iv - (1 if minor and iv == 4 else 0), vel + accent)
        _note(horn, 7, t, 4 if not final else 8, root + 12 + chord[1], vel - 10 + accent)  # horn: the third
        if section == 2:  # violin: eighth-note runs up the scale
            for i in range(8):
                pitch = root + 24 + scale[i % 7] + 12 * (i // 7)
                _note(violin, 8, t + i * 0.5, 0.48, pitch, vel - 8)
        if bar % 2 == 0:  # vibraphone: a bell tone every other bar
            _note(vibes, 10, t + 1, 3, root + 36 + chord[bar // 2 % 3], vel - 10)
        if section == 3:  # choir: the last section's pad
            for iv in chord:
                _note(choir, 11, t, 4 if not final else 8, root + 12 + iv, vel - 10)
    for name, events in parts.items():
        mid.tracks.append(_track_from_events(events, name))
    return mid


def main(argv: list[str] | None = None) -> int:
    """Write every demo file into the output directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parents[1] / "examples")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, build in (("piano_pedal.mid", piano_pedal), ("gm_band.mid", gm_band),
                        ("orchestra_dense.mid", orchestra_dense)):  # fmt: skip
        path = args.output / name
        build().save(path)
        print(f"wrote {path} ({mido.MidiFile(path).length:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
