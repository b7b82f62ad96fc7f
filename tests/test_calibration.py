"""The playback calibration and its measures: loudness, attack and release of a note; the velocity
curve; a note played at the real instrument's level; a drum played at the real kit's level; old
cache files prepared again."""

from __future__ import annotations

import json
import math

import mido
import numpy as np
import pytest
from test_engine_harmonic_source import drum_kit_source
from test_render import note, write_midi

from engine.calibration import (
    ENVELOPE_FRAME_SECONDS,
    ENVELOPE_FRAMES,
    ENVELOPE_LIMIT_DB,
    Calibration,
    envelope_gain,  # fmt: skip
    load_calibration,
    velocity_curve,
)
from engine.midi.drum_kits import DrumKits
from engine.note_cache import NoteCache
from engine.preset import Preset
from engine.render import RenderSettings, render_to_array
from engine.synth import Synth, prepare_note
from engine.synth.effects import DRY
from engine.synth.loudness import (
    attack_seconds,
    centroid_hz,
    envelope_db,
    level_db,
    release_seconds,
    tilt_to_centroid,  # fmt: skip
)
from engine.synth.sample import NoteSample, StaleNoteFile
from mars_model.api import FIRST_KIT
from mars_model.data.build import ONE_SHOT, render_notes
from mars_model.data.soundfont import PERCUSSION_BANK
from mars_model.errors import MarsError

RATE = 16000


def _tone(seconds: float = 4.0, amplitude: float = 0.5, freq: float = 1000.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_level_is_k_weighted_power_in_db_at_any_rate():
    # A full-scale 1 kHz sine reads about -2.6 dB (-3 dB of a sine, +0.4 dB of K-weighting at 1 kHz).
    for rate in (16000, 48000):
        assert level_db(_tone(1.0, 1.0, rate=rate), rate) == pytest.approx(-2.6, abs=0.15)
    # Amplitude / 10 is -20 dB; the shelf lifts 4 kHz by about 3.5 dB more than 1 kHz.
    assert level_db(_tone(1.0, 0.1), RATE) - level_db(_tone(1.0, 1.0), RATE) == pytest.approx(-20.0, abs=0.01)
    assert level_db(_tone(1.0, 1.0, 4000.0), RATE) - level_db(_tone(1.0, 1.0), RATE) == pytest.approx(3.5, abs=0.5)
    # 30 Hz is cut by the high-pass; silence is the floor, not -inf.
    assert level_db(_tone(1.0, 1.0, 30.0), RATE) < level_db(_tone(1.0, 1.0), RATE) - 3.0
    assert level_db(np.zeros(RATE, np.float32), RATE) == -100.0


def test_attack_and_release_of_a_shaped_tone():
    t = np.arange(4 * RATE) / RATE
    envelope = np.minimum(t / 0.1, 1.0)  # linear 100 ms ramp: -3 dB at about 71 ms
    envelope[t >= 3.0] = 10 ** (-60 / 20 * (t[t >= 3.0] - 3.0) / 0.5)  # -60 dB in 0.5 s after key up
    tone = _tone() * envelope
    assert attack_seconds(tone, RATE) == pytest.approx(0.071, abs=0.006)
    assert release_seconds(tone, RATE, 3.0) == pytest.approx(0.5, rel=0.05)
    assert release_seconds(_tone(), RATE, 3.0) is None  # no decay after key up
    assert release_seconds(np.zeros(4 * RATE), RATE, 3.0) is None


def test_velocity_curve_is_monotone_smooth_and_extrapolates_gently():
    curve = velocity_curve(np.array([25, 50, 75, 100, 127]), np.array([-50.0, -38.0, -31.0, -26.0, -22.0]))
    assert curve.shape == (128,) and curve[127] == pytest.approx(-22.0) and curve[50] == pytest.approx(-38.0)
    steps = np.diff(curve[1:])
    assert steps.min() > 0 and steps.max() <= 0.9 + 1e-6
    assert curve[1] == pytest.approx(-50.0 - 24 * 12 / 25, abs=1e-4)  # the 25-50 slope, carried on down
    # A measured dip is flattened, never played backwards; a steep low segment is bounded below 25.
    dip = velocity_curve(np.array([25, 50, 75]), np.array([-40.0, -30.0, -31.0]))
    assert np.diff(dip).min() >= 0 and np.diff(dip[:25]).max() <= 0.9 + 1e-6


def _calibration() -> Calibration:
    data = {"source": "test", "velocities": [25, 127], "generic": [-40.0, -20.0],
            "programs": {"0": {"pitches": [60, 62], "levels": [[-30.0, -10.0], [-34.0, -14.0]], "release": 0.5, "attack": 0.01},
                         "48": {"pitches": [60], "levels": [[-50.0, -30.0]], "release": 2.0, "attack": 0.2}}}  # fmt: skip
    return Calibration.from_json(data)


def test_target_curves_interpolate_pitch_and_mix_a_morph():
    calibration = _calibration()
    assert calibration.target_curve({0: 1.0}, 61)[127] == pytest.approx(-12.0)
    assert calibration.target_curve({0: 1.0}, 70)[25] == pytest.approx(-34.0)  # nearest measured pitch outside
    assert calibration.target_curve({0: 0.5, 48: 0.5}, 60)[127] == pytest.approx(-20.0)
    assert calibration.target_curve({99: 1.0}, 60)[127] == pytest.approx(-20.0)  # unmeasured: the generic curve
    assert calibration.release({0: 0.5, 48: 0.5}) == pytest.approx(1.0)  # geometric mean
    assert calibration.release({99: 1.0}) is None and not calibration.covers({0: 1.0, 99: 1.0})
    assert Calibration.from_json(json.loads(json.dumps(calibration.to_json()))).to_json() == calibration.to_json()
    with pytest.raises(MarsError, match="not a valid playback calibration"):
        Calibration.from_json({"velocities": [25], "generic": [1.0], "programs": {"0": {"pitches": [60], "levels": [[1, 2]]}}})


def test_the_shipped_calibration_covers_every_program_the_presets_and_model_play():
    calibration = load_calibration()
    for program in (0, 4, 11, 12, 16, 19, 24, 27, 32, 33, 38, 40, 42, 48, 52, 53, 56, 60, 65, 71, 73, 75, 80, 81):
        known = calibration.programs[program]
        assert known.release is not None and 0.005 < known.release < 10.0
        assert np.all(np.diff(known.levels, axis=1) > 0), f"program {program}: level not rising with velocity"


def test_a_note_plays_at_the_real_level_whatever_its_generated_level():
    calibration = _calibration()
    target = calibration.target_curve({0: 1.0}, 60)
    quiet, loud = (prepare_note(_tone(amplitude=a), RATE, 48000, 60, target) for a in (0.05, 0.5))
    assert loud.level_db - quiet.level_db == pytest.approx(20.0, abs=0.01)
    for velocity in (1, 40, 90, 127):
        played = [20 * math.log10(n.velocity_gain(velocity)) + n.level_db for n in (quiet, loud)]
        assert played == pytest.approx([float(target[velocity])] * 2, abs=1e-3)
    # Sensitivity scales the distance below velocity 127; 0 plays every velocity as 127.
    assert loud.velocity_gain(25, 0.0) == pytest.approx(loud.velocity_gain(127))
    assert 20 * math.log10(loud.velocity_gain(25, 2.0) / loud.velocity_gain(127)) == pytest.approx(-40.0, abs=0.01)
    # A near-silent generated note is not blown up into noise.
    silent = prepare_note(np.full(4 * RATE, 1e-7, np.float32), RATE, 48000, 60, target)
    assert silent.velocity_gain(127) == pytest.approx(10 ** (24 / 20))
    # Uncalibrated: General MIDI's 40 dB curve on the note as generated.
    assert prepare_note(_tone(), RATE, 48000, 60).velocity_gain(64) == pytest.approx((64 / 127) ** 2)


def test_prepared_notes_keep_their_level_on_disk_and_old_files_are_prepared_again(tmp_path):
    note = prepare_note(_tone(), RATE, 48000, 60)
    note.save(tmp_path / "n.note")
    again = NoteSample.load(tmp_path / "n.note")
    assert again.level_db == note.level_db and np.array_equal(again.data, note.data)
    # A file of the previous format: header magic 'MARS1', seven words.
    old = np.array([0x4D41525331, note.loop_start, note.crossfade, 48000, 60, note.data.shape[0],
                    note.loop.shape[0]], np.int64).tobytes() + note.data.tobytes() + note.loop.tobytes()  # fmt: skip
    (tmp_path / "old.note").write_bytes(old)
    with pytest.raises(StaleNoteFile):
        NoteSample.load(tmp_path / "old.note")


class _ToneSource:
    """A NoteSource whose notes are 1 kHz tones, loud or quiet by velocity layer."""

    sample_rate, pitch_range, model_id = RATE, (21, 108), "tones"

    def generate(self, requests):
        return np.stack([_tone(amplitude=0.02 * r.velocity / 25) for r in requests])


def test_the_cache_prepares_old_files_again_silently_and_calibrates_them(tmp_path):
    preset = Preset(name="p", instrument=0)
    first = NoteCache(48000, _ToneSource(), "tones", cache_dir=tmp_path, progress=False, calibration=_calibration())
    key = first.key(preset, 60, 100)
    note = first.get(key)
    prepared = next(tmp_path.rglob("*.note"))
    data = prepared.read_bytes()
    # Rewrite it in the old format: the level word gone, magic MARS1.
    header = np.frombuffer(data[:64], np.int64).copy()
    header[0] = 0x4D41525331
    prepared.write_bytes(header[:7].tobytes() + data[64:])
    second = NoteCache(48000, _ToneSource(), "tones", cache_dir=tmp_path, progress=False, calibration=_calibration())
    again = second.get(second.key(preset, 60, 100))
    assert second.stats.generated == 0 and not second.warnings
    assert again.level_db == pytest.approx(note.level_db) and again.target_db is not None
    # Through the synth at velocity 127 the note sounds at the calibration's level (program 0 at
    # pitch 60: -10 dB), times the channel's default volume (CC7 100: (100/127)^2).
    synth = Synth(48000, polyphony=2, block_size=4096, gain=1.0)
    synth.note_on(0, 60, 127, again, preset.patch, again.velocity_gain(127))
    out = np.zeros((2, 48000), np.float32)
    for start in range(0, 48000, 4096):
        synth.render(out[:, start : start + 4096], min(4096, 48000 - start))
    assert level_db(out[0], 48000) == pytest.approx(-10.0 + 40 * math.log10(100 / 127), abs=0.05)


def test_envelope_gain_reshapes_a_slow_swell_into_the_real_envelope():
    t = np.arange(4 * RATE) / RATE
    swell = _tone() * np.minimum(t / 0.6, 1.0)  # creeps in over 0.6 s
    flat = envelope_db(_tone(), RATE, ENVELOPE_FRAME_SECONDS)[:ENVELOPE_FRAMES] - level_db(_tone(), RATE)
    shaped = swell * envelope_gain(swell, RATE, flat)
    ours = envelope_db(shaped, RATE, ENVELOPE_FRAME_SECONDS)[:ENVELOPE_FRAMES]
    # From 0.15 s on (where the swell is within the correction's limit) the shape is the target's.
    error = ours[3:] - flat[3:]
    assert np.abs(error - np.median(error)).max() < 1.5
    assert attack_seconds(shaped, RATE) < 0.5 * attack_seconds(swell, RATE)
    # Never more than the limit, and a note already shaped like the target is left as it is.
    gain_db = 20 * np.log10(envelope_gain(swell, RATE, flat))
    assert gain_db.max() <= ENVELOPE_LIMIT_DB + 1e-3 and gain_db.min() >= -ENVELOPE_LIMIT_DB - 1e-3
    assert np.allclose(envelope_gain(_tone(), RATE, flat), 1.0, atol=1e-3)


def test_tilt_moves_the_centroid_to_the_target_within_its_limit():
    t = np.arange(4 * RATE) / RATE
    harmonic = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 30)).astype(np.float32)
    before = centroid_hz(harmonic, RATE)
    for target in (0.6 * before, 1.5 * before):
        tilted = tilt_to_centroid(harmonic, RATE, target)
        assert centroid_hz(tilted, RATE) == pytest.approx(target, rel=1e-3)
        # A static EQ: the partials stay where they were, the envelope keeps its shape.
        assert np.corrcoef(np.abs(np.fft.rfft(tilted))[::50], np.abs(np.fft.rfft(harmonic))[::50])[0, 1] > 0.5
    # Out of reach: the tilt stops at 6 dB per octave, never flips the spectrum over.
    assert centroid_hz(tilt_to_centroid(harmonic, RATE, 7000.0), RATE) < 7000.0
    assert np.array_equal(tilt_to_centroid(np.zeros(RATE, np.float32), RATE, 500.0), np.zeros(RATE, np.float32))


def _with_kits(kits) -> dict:
    data = _calibration().to_json()
    data["kits"] = kits
    return data


def test_kit_levels_round_trip_and_give_a_curve_through_the_measured_velocities():
    # Two velocities (25, 127); key 38's 127 is held out (null): it rises from its 25 as the
    # kit's keys measured at both do (kick and hi-hat by 20 dB, the median).
    kits = {"0": {"keys": [36, 38, 42, 46], "db": [-40.0, -20.0, -45.0, None, -50.0, -30.0, -30.0, -16.0]}}
    calibration = Calibration.from_json(_with_kits(kits))
    kick = calibration.kit_curve(0, 36)
    assert kick[25] == pytest.approx(-40.0) and kick[127] == pytest.approx(-20.0) and kick[76] == pytest.approx(-30.0)
    assert calibration.kit_shape == pytest.approx([-20.0, 0.0])
    assert calibration.kit_curve(0, 38)[127] == pytest.approx(-25.0)
    assert calibration.kit_curve(0, 37) is None and calibration.kit_curve(25, 36) is None  # not measured
    again = Calibration.from_json(json.loads(json.dumps(calibration.to_json())))
    assert again.to_json() == calibration.to_json() and np.isnan(again.kits[0].levels[1, 1])
    assert "kits" not in _calibration().to_json()  # a file without kits stays as it was


@pytest.mark.parametrize("kits, complaint", [
    ({"0": {"keys": [36, 38], "db": [-40.0, -20.0, -45.0]}}, "kit 0: 3 levels for 2 keys at 2 velocities"),
    ({"0": {"keys": [38, 36], "db": [-40.0, -20.0, -45.0, -25.0]}}, "kit 0: keys must be ascending MIDI keys"),
    ({"25": {"keys": [36], "db": [None, None]}}, "kit 25: every key needs a finite level"),
    ({"0": {"db": [-40.0, -20.0]}}, "'keys'"),
    ({"0": {"keys": [36], "db": ["loud", -20.0]}}, "could not convert"),
    ({"zero": {"keys": [36], "db": [-40.0, -20.0]}}, "invalid literal"),
])  # fmt: skip
def test_a_malformed_kit_section_is_rejected_in_one_line(kits, complaint):
    with pytest.raises(MarsError) as caught:
        Calibration.from_json(_with_kits(kits), "playback.json")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("playback.json is not a valid playback calibration")
    assert complaint in message


def test_the_shipped_kit_curves_are_monotone_gentle_and_through_every_measured_level():
    calibration = load_calibration()
    kits = DrumKits.load()
    for program, kit in kits.kits.items():
        own = [key for key, sound in kit.sounds.items() if sound.instrument == FIRST_KIT + program]
        assert list(calibration.kits[program].keys) == sorted(own), f"kit {program}: its own keys, all measured"
        for key in own:
            measured = calibration.kits[program].levels_of(key)
            curve = calibration.kit_curve(program, key)
            steps = np.diff(curve[1:])
            assert steps.min() >= 0 and steps.max() <= 1.0, f"kit {program} key {key}: steps {steps.min()}..{steps.max()}"
            # The softest and loudest stroke are always measured (the note set trains them);
            # the curve passes through every measured level that is not a dip.
            assert np.isfinite(measured[[0, -1]]).all()
            known = np.isfinite(measured)
            rising = known & (measured >= np.fmax.accumulate(np.where(known, measured, -np.inf)))
            at = calibration.velocities[rising]
            assert curve[at] == pytest.approx(measured[rising], abs=0.01)


#: (kit, key) played through the engine: Standard's snare, the TR-808's own kick (held, it
#: honours note-off), Room 1's own kick (a variation), a closed hi-hat (a 40 ms test decay).
KIT_KEYS = [(0, 38), (25, 36), (9, 36), (0, 42)]
#: Velocities played; 37, 60 and 90 lie between measured ones.
PLAYED = (10, 25, 37, 60, 90, 100, 127)


@pytest.mark.parametrize("kit, key", KIT_KEYS)
def test_a_drum_plays_at_the_real_kits_level_for_its_key_and_velocity(tmp_path, kit, key, fluidr3_soundfont):
    events = [(0, mido.Message("program_change", program=kit, channel=9))]
    for i, velocity in enumerate(PLAYED):  # a hit every 2 s, held 1.2 s (the 808's kick ends on key up)
        events += note(480 + 1920 * i, 1152, key, velocity, ch=9)
    settings = RenderSettings(sample_rate=48000, progress=False, effects=DRY, tail=2.0, gain=1.0)
    audio, _ = render_to_array(write_midi(tmp_path / "hits.mid", events), settings, drum_kit_source())
    # Each hit's level as played (left channel: the centre pan leaves it whole), less the
    # channel's default volume (CC7 100: General MIDI's (100/127)^2).
    played = np.array([level_db(audio[0, int((0.5 + 2 * i) * 48000) :], 48000) for i in range(len(PLAYED))])
    played -= 40 * math.log10(100 / 127)
    # The calibration's curve, to 0.15 dB: a note's level is measured as generated (16 kHz), and
    # resampling it to 48 kHz takes a little off the top of the band; the test drums' white-noise
    # click loses most there (0.07 dB on the snare, 0.1 dB on the 40 ms hi-hat).
    curve = load_calibration().kit_curve(kit, key)
    assert played == pytest.approx(curve[list(PLAYED)], abs=0.15)
    # And FluidR3's own drum from velocity 25 up, between the measured velocities too: the curve
    # is linear in dB there and FluidSynth's is concave, 1.04 dB under it at the worst, velocity
    # 37, and resampling takes its 0.07 dB more (below 25 we fall gently where FluidSynth drops
    # 12 dB in one step).
    real = render_notes(fluidr3_soundfont, kit, [(key, v) for v in PLAYED[1:]], bank=PERCUSSION_BANK, protocol=ONE_SHOT)
    assert played[1:] == pytest.approx([level_db(w, RATE) for w in real], abs=1.2)


def test_envelopes_are_kept_compact_and_the_list_layout_still_reads():
    rows = np.round(np.linspace(-30.0, 3.0, 2 * ENVELOPE_FRAMES).reshape(2, ENVELOPE_FRAMES), 1)
    listed = _calibration().to_json()
    listed["programs"]["0"]["envelope"] = {"pitches": [60, 62], "db": rows.tolist()}
    calibration = Calibration.from_json(listed)
    written = calibration.to_json()["programs"]["0"]["envelope"]
    assert "db" not in written and len(written["db16"]) == 4 * math.ceil(2 * 2 * ENVELOPE_FRAMES / 3)  # base64 int16
    again = Calibration.from_json(calibration.to_json())
    assert np.array_equal(again.programs[0].envelopes, rows)  # every 0.1 dB step survives exactly
    broken = calibration.to_json()
    broken["programs"]["0"]["envelope"]["db16"] = "not base64!"
    with pytest.raises(MarsError, match="^calibration is not a valid playback calibration .*; reinstall mars-synth$"):
        Calibration.from_json(broken)


def test_calibrate_playback_measures_a_kit_as_the_shipped_file_has_it(tmp_path, fluidr3_soundfont, capsys):
    from tools.calibrate_playback import main

    shipped = load_calibration()
    path = tmp_path / "playback.json"
    path.write_text(json.dumps({**shipped.to_json(), "kits": {}}))
    assert main(["--kits", "41", "--update", "-o", str(path), "--workers", "1", "--quiet", "--kit-report"]) == 0
    again = load_calibration(path)
    assert again.to_json()["programs"] == shipped.to_json()["programs"]  # the melodic part untouched
    assert list(again.kits) == [41] and list(again.kits[41].keys) == [35, 36]  # Brush 1's own kicks
    assert np.array_equal(again.kits[41].levels, shipped.kits[41].levels, equal_nan=True)  # FluidSynth is deterministic
    assert "level of a held-out velocity" in capsys.readouterr().out
