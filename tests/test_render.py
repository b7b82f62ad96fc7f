"""``render``: MIDI files in, audio out, judged on what a listener would notice - timing, pedal, bend,
polyphony, clipping, determinism - plus the note cache and every bad input as one clear line.

Notes come from the test instrument ``HarmonicNoteSource`` (not the model), passed in directly
or, for the command line, named by ``MARS_SYNTH_NOTE_SOURCE``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile
from test_engine_harmonic_source import HarmonicNoteSource

from engine.bindings.cli import main
from engine.render import RenderSettings, render_file, render_to_array
from engine.synth.effects import DRY, EffectsSettings
from mars_model.errors import MarsError

SOURCE_SPEC = "test_engine_harmonic_source:HarmonicNoteSource"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_midi(path, events, ticks_per_beat=480, bpm=120.0):
    """One track from (absolute tick, message) pairs, at a fixed tempo."""
    mid = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)])
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid.tracks.append(track)
    mid.save(path)
    return path


def note(tick, length, pitch, vel=100, ch=0):
    return [(tick, mido.Message("note_on", note=pitch, velocity=vel, channel=ch)),
            (tick + length, mido.Message("note_off", note=pitch, channel=ch))]  # fmt: skip


def cc(tick, control, value, ch=0):
    return [(tick, mido.Message("control_change", control=control, value=value, channel=ch))]


def settings(**kw) -> RenderSettings:
    kw.setdefault("sample_rate", 16000)
    kw.setdefault("progress", False)
    kw.setdefault("preset", "grand_piano")
    return RenderSettings(**kw)


@pytest.fixture
def source():
    return HarmonicNoteSource()


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    """The command line with the test instrument and a private cache directory."""
    monkeypatch.setenv("MARS_SYNTH_NOTE_SOURCE", SOURCE_SPEC)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


@pytest.mark.parametrize("rate", [44100, 48000])
def test_onsets_land_on_the_right_sample(tmp_path, source, rate):
    # Isolated short notes at known ticks; 120 bpm, 480 ticks per beat -> 1 tick = 1/960 s.
    ticks = [480, 1111, 2000, 2987]
    events = [e for t in ticks for e in note(t, 60, 69)]
    path = write_midi(tmp_path / "onsets.mid", events)
    audio, _ = render_to_array(path, settings(sample_rate=rate, tail="eot", preset="drawbar_organ", effects=DRY),
                               source)  # fmt: skip
    mono = np.abs(audio).sum(axis=0)
    found = []
    for t in ticks:
        expected = round(t / 960 * rate)
        window = mono[expected - rate // 20 : expected + rate // 20]
        first = int(np.flatnonzero(window > 0)[0]) + expected - rate // 20
        found.append(first - expected)
    # The note starts at its sample; the first non-zero output is its attack's first step.
    assert all(0 <= d <= 2 for d in found), found


def test_sustain_pedal_lengthens_notes(tmp_path, source):
    events = note(0, 240, 60)  # a quarter second
    dry = write_midi(tmp_path / "dry.mid", events)
    wet = write_midi(tmp_path / "wet.mid", events + cc(10, 64, 127) + cc(1920, 64, 0))  # pedal up at 2 s
    a, _ = render_to_array(dry, settings(effects=DRY), source)  # (no reverb tail to blur the note ends)
    b, _ = render_to_array(wet, settings(effects=DRY), source)
    window = slice(int(1.0 * 16000), int(1.9 * 16000))
    assert rms(b[0, window]) > 100 * max(rms(a[0, window]), 1e-9)
    assert b.shape[1] > a.shape[1] + 1.5 * 16000


def test_pitch_bend_of_200_cents_moves_f0_by_200_cents(tmp_path, source):
    import librosa

    events = note(0, 1400, 57) + [(480, mido.Message("pitchwheel", pitch=8191))]  # +2 semitones at 0.5 s
    path = write_midi(tmp_path / "bend.mid", events)
    audio, _ = render_to_array(path, settings(tail="eot", preset="strings"), source)
    y = audio[0]

    def f0(start, stop):
        f, voiced, _ = librosa.pyin(y[int(start * 16000) : int(stop * 16000)], fmin=150, fmax=600, sr=16000,
                                    frame_length=1024)  # fmt: skip
        return float(np.nanmedian(f[voiced]))

    before, after = f0(0.1, 0.45), f0(0.65, 1.0)
    cents = 1200 * np.log2(after / before)
    assert abs(before - 220.0) < 3
    assert cents == pytest.approx(200, abs=20)


def test_rpn_bend_range_applies_in_files(tmp_path, source):
    import librosa

    events = (note(0, 1400, 57) + cc(0, 101, 0) + cc(0, 100, 0) + cc(0, 6, 7) + cc(0, 38, 0)
              + [(480, mido.Message("pitchwheel", pitch=8191))])  # fmt: skip
    audio, _ = render_to_array(write_midi(tmp_path / "rpn.mid", events), settings(tail="eot"), source)
    f, voiced, _ = librosa.pyin(audio[0, int(0.7 * 16000) : int(1.0 * 16000)], fmin=150, fmax=600, sr=16000,
                                frame_length=1024)  # fmt: skip
    assert 1200 * np.log2(np.nanmedian(f[voiced]) / 220.0) == pytest.approx(700, abs=20)


def test_no_reverb_renders_exactly_what_cc91_0_renders(cli_env, capsys):
    events = note(0, 240, 60) + note(480, 240, 64)
    plain = write_midi(cli_env / "plain.mid", events)
    sends_off = write_midi(cli_env / "off.mid", events + cc(0, 91, 0))
    outputs = {}
    for name, midi, flags in (("flag", plain, ["--no-reverb"]), ("cc", sends_off, []), ("default", plain, [])):
        out = cli_env / f"{name}.wav"
        assert main(["render", str(midi), "-o", str(out), "-q", "--subtype", "float", "--preset", "drawbar_organ",
                     *flags]) == 0  # fmt: skip
        outputs[name] = soundfile.read(out, dtype="float32")[0]
    assert np.array_equal(outputs["flag"], outputs["cc"])
    dry_end = outputs["flag"].shape[0]
    default = outputs["default"]  # CC91 40 at power-on: the same notes, then a reverb tail
    assert default.shape[0] > dry_end + 24000
    # A quarter second after the dry sound ended, the tail is still within 30 dB of the notes.
    assert rms(default[dry_end : dry_end + 12000]) > 10 ** (-30 / 20) * rms(outputs["flag"])


def test_the_auto_tail_lets_the_reverb_ring_out_to_minus_90_dbfs(tmp_path, source):
    path = write_midi(tmp_path / "short.mid", note(0, 96, 60) + cc(0, 91, 127))
    dry, _ = render_to_array(path, settings(effects=DRY, preset="drawbar_organ"), source)
    short, _ = render_to_array(path, settings(effects=EffectsSettings(reverb_time=1.0), preset="drawbar_organ"),
                               source)  # fmt: skip
    long, _ = render_to_array(path, settings(effects=EffectsSettings(reverb_time=3.0), preset="drawbar_organ"),
                              source)  # fmt: skip
    dry_seconds, short_tail, long_tail = (x.shape[1] / 16000 for x in (dry, short, long))
    short_tail, long_tail = short_tail - dry_seconds, long_tail - dry_seconds
    # From about -30 dBFS (the calibrated organ) to -90 dBFS: about one reverb time after the dry
    # sound ends, three times as long for three times the reverb time.
    assert dry_seconds < 0.6 and 0.6 < short_tail < 1.5 and 1.8 < long_tail < 4.5, (short_tail, long_tail)
    assert 2.4 < long_tail / short_tail < 3.6
    for audio in (short, long):
        assert np.abs(audio[:, -256:]).max() < 10 ** (-85 / 20)  # it stopped at silence, not before
        assert np.abs(audio[:, -16000:-12000]).max() > 10 ** (-90 / 20)  # ... and not long after


def test_effect_options_are_checked(cli_env, capsys):
    path = write_midi(cli_env / "ok.mid", note(0, 480, 60))
    for flags, words in ((["--reverb-level", "-1"], "reverb level"), (["--reverb-time", "0"], "reverb time"),
                         (["--chorus-level", "5"], "chorus level")):  # fmt: skip
        assert main(["render", str(path), "-o", str(cli_env / "x.wav"), *flags]) == 1
        assert words in one_error_line(capsys)


def test_polyphony_limit_holds_in_a_render(tmp_path, source):
    events = [e for i in range(12) for e in note(i * 20, 1900, 48 + 2 * i)]
    path = write_midi(tmp_path / "poly.mid", events)
    _, report = render_to_array(path, settings(polyphony=5), source)
    assert report.peak_voices == 5 and report.steals == 7


def test_dense_32_note_chord_does_not_clip(tmp_path, source):
    events = [e for i in range(32) for e in note(0, 960, 40 + i, vel=127)]
    path = write_midi(tmp_path / "chord.mid", events)
    out = tmp_path / "chord.wav"
    report = render_file(path, out, settings(gain=2.0, preset="drawbar_organ"), source, subtype="float")
    audio, _ = soundfile.read(out)
    assert np.abs(audio).max() < 1.0 and report.peak < 1.0
    assert rms(audio) > 0.1


def test_same_seed_same_output_other_seed_other_output(tmp_path, source):
    path = EXAMPLES / "piano_pedal.mid"
    a, _ = render_to_array(path, settings(preset=None, seed=3), source)
    b, _ = render_to_array(path, settings(preset=None, seed=3), HarmonicNoteSource())
    c, _ = render_to_array(path, settings(preset=None, seed=4), source)
    assert np.array_equal(a, b)
    assert a.shape == c.shape and not np.array_equal(a, c)


def test_notes_are_generated_once_in_batches_and_cached_on_disk(tmp_path, source):
    path = EXAMPLES / "gm_band.mid"
    cache = tmp_path / "cache"
    first, r1 = render_to_array(path, settings(preset=None, cache_dir=cache), source)
    assert r1.cache.generated == r1.distinct_notes > 0 and r1.cache.hits == 0
    assert len(source.calls) == -(-r1.distinct_notes // 16)  # batches of 16
    again = HarmonicNoteSource()
    second, r2 = render_to_array(path, settings(preset=None, cache_dir=cache), again)
    assert again.calls == [] and r2.cache.disk_hits == r2.distinct_notes
    assert np.array_equal(first, second)
    other_rate, r3 = render_to_array(path, settings(preset=None, cache_dir=cache, sample_rate=22050), again)
    assert again.calls == [] and r3.cache.disk_hits == r3.distinct_notes  # prepared from the raw notes
    assert list((cache / again.model_id).glob("*.raw.npz"))


def test_dry_run_counts_the_notes_a_render_needs_and_learns_the_speed(cli_env, capsys):
    midi = str(EXAMPLES / "gm_band.mid")
    assert main(["render", midi, "--dry-run"]) == 0
    before = capsys.readouterr().out
    assert "168 notes, 42 distinct: 0 in the cache, 42 to generate" in before
    assert "notes/s assumed" in before and "channel 10" in before
    assert not (cli_env / "xdg" / "mars-synth").exists()  # a dry run renders and caches nothing
    assert main(["render", midi, "-o", str(cli_env / "band.wav"), "--quiet"]) == 0
    assert main(["render", midi, "--dry-run"]) == 0
    after = capsys.readouterr().out
    assert "42 distinct: 42 in the cache, 0 to generate" in after
    speed = json.loads((cli_env / "xdg" / "mars-synth" / "generation-speed.json").read_text())
    assert list(speed.values())[0] > 0  # the render recorded how fast it generated
    assert main(["render", midi]) == 2
    assert "-o/--output is required" in capsys.readouterr().err


def test_programs_the_model_does_not_know_fall_back_with_a_warning(tmp_path):
    limited = HarmonicNoteSource(instruments=(0, 33, 48, 56))
    audio, report = render_to_array(EXAMPLES / "gm_band.mid", settings(preset=None), limited)
    assert rms(audio) > 0.01
    warnings = " ".join(report.warnings)
    assert "GM program 4 is not in this model; played with 0" in warnings  # nearest of its group
    assert "GM program 65 is not in this model; played with 56" in warnings  # nearest overall
    assert "GM program 33" not in warnings and "GM program 48" not in warnings


def test_examples_render_with_every_feature(tmp_path, source):
    audio, report = render_to_array(EXAMPLES / "gm_band.mid", settings(preset=None, sample_rate=22050), source)
    assert report.notes > 100 and report.skipped_notes > 0
    assert any("channel 10" in w for w in report.warnings)
    assert np.abs(audio).max() < 1.0 and rms(audio) > 0.01
    assert 17 < report.seconds < 25


def test_cli_render_writes_the_file_and_a_summary(cli_env, capsys):
    out = cli_env / "demo.flac"
    code = main(["render", str(EXAMPLES / "piano_pedal.mid"), "-o", str(out), "--sample-rate", "22050",
                 "--subtype", "16"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    info = soundfile.info(str(out))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 22050, 2)
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"mars-synth render: wrote {out}:")
    for word in ("s of audio", "notes", "cache hits", "wall", "real time"):
        assert word in summary
    assert list((cli_env / "xdg" / "mars-synth").rglob("*.note"))  # XDG_CACHE_HOME honoured
    assert main(["render", str(EXAMPLES / "piano_pedal.mid"), "-o", str(out), "--sample-rate", "22050"]) == 0
    assert "0 generated" in capsys.readouterr().err


def test_cli_quiet_no_cache_tail_and_cache_dir(cli_env, capsys):
    path = write_midi(cli_env / "one.mid", note(0, 960, 60))  # a 1 s note, file ends at 1 s
    out = cli_env / "one.wav"
    assert main(["render", str(path), "-o", str(out), "--tail", "eot", "--quiet", "--no-cache"]) == 0
    assert capsys.readouterr().err == ""
    assert soundfile.info(str(out)).frames == 48000
    assert not (cli_env / "xdg").exists()
    assert main(["render", str(path), "-o", str(out), "--tail", "2.5", "-q", "--cache-dir", str(cli_env / "c")]) == 0
    assert soundfile.info(str(out)).frames == int(3.5 * 48000)
    assert list((cli_env / "c").rglob("*.note"))
    assert main(["render", str(path), "-o", str(out), "-q", "--preset", "strings"]) == 0
    assert 1.3 < soundfile.info(str(out)).duration < 3  # auto tail: the release, then silence


def test_map_can_give_the_drum_channel_a_preset(cli_env, capsys):
    mapping = cli_env / "map.yaml"
    mapping.write_text("channels:\n  10: vibraphone\n")
    path = write_midi(cli_env / "drums.mid", note(0, 240, 38, ch=9))
    out = cli_env / "drums.wav"
    assert main(["render", str(path), "-o", str(out), "--map", str(mapping)]) == 0
    assert "0 distinct" not in capsys.readouterr().err
    assert np.abs(soundfile.read(out)[0]).max() > 0.01


def test_notes_that_never_end_are_released_at_the_end_of_the_file(cli_env, capsys):
    events = [(0, mido.Message("note_on", note=60, velocity=100))] + cc(0, 64, 127) + [
        (1920, mido.Message("control_change", control=7, value=100))]  # file ends at 2 s, note still on
    path = write_midi(cli_env / "forever.mid", events)
    out = cli_env / "forever.wav"
    started = time.perf_counter()
    assert main(["render", str(path), "-o", str(out)]) == 0
    assert time.perf_counter() - started < 20
    assert "still held at the end of the file; released there" in capsys.readouterr().err
    assert 2.0 < soundfile.info(str(out)).duration < 4.0


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("content", [b"", b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x20\x00\x90",
                                     bytes(range(64))], ids=["empty", "truncated", "garbage"])  # fmt: skip
def test_cli_bad_midi_is_one_error_line(cli_env, capsys, content):
    path = cli_env / "bad.mid"
    path.write_bytes(content)
    assert main(["render", str(path), "-o", str(cli_env / "x.wav")]) == 1
    assert one_error_line(capsys).startswith("mars-synth render: error:")
    assert not (cli_env / "x.wav").exists()


def test_cli_absurd_tempo_is_one_error_line(cli_env, capsys):
    mid = mido.MidiFile(type=0)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=0xFFFFFF), mido.Message("note_on", note=60),
                                      mido.Message("note_off", note=60, time=480 * 1000)]))  # fmt: skip
    mid.save(cli_env / "slow.mid")
    assert main(["render", str(cli_env / "slow.mid"), "-o", str(cli_env / "x.wav")]) == 1
    assert "--max-duration" in one_error_line(capsys)


def test_cli_unwritable_output_fails_before_generating(cli_env, capsys):
    path = write_midi(cli_env / "ok.mid", note(0, 480, 60))
    assert main(["render", str(path), "-o", "/nonexistent-dir/out.wav"]) == 1
    assert "cannot write /nonexistent-dir/out.wav" in one_error_line(capsys)
    assert main(["render", str(path), "-o", str(cli_env)]) == 1
    assert "is a directory" in one_error_line(capsys)
    assert main(["render", str(path), "-o", str(cli_env / "out.mp3")]) == 1
    assert "--format wav|flac" in one_error_line(capsys)
    assert main(["render", str(path), "-o", str(cli_env / "out.flac"), "--subtype", "float"]) == 1
    assert "FLAC cannot hold float" in one_error_line(capsys)


def test_cli_unknown_preset_and_empty_score(cli_env, capsys):
    path = write_midi(cli_env / "ok.mid", note(0, 480, 60))
    assert main(["render", str(path), "-o", str(cli_env / "x.wav"), "--preset", "kazoo"]) == 1
    assert "unknown preset 'kazoo'; known presets:" in one_error_line(capsys)
    empty = write_midi(cli_env / "empty.mid", cc(0, 7, 100))
    assert main(["render", str(empty), "-o", str(cli_env / "x.wav")]) == 1
    assert "has no notes" in one_error_line(capsys)


def test_cli_renders_with_the_shipped_model_or_says_it_is_missing(monkeypatch, tmp_path, capsys):
    weights = Path(__file__).resolve().parents[1] / "mars_model" / "weights"
    monkeypatch.delenv("MARS_SYNTH_NOTE_SOURCE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = write_midi(tmp_path / "ok.mid", note(0, 480, 60) + note(480, 960, 67))
    out = tmp_path / "x.wav"
    if not (weights / "autoregressor.pt").is_file():
        assert main(["render", str(path), "-o", str(out)]) == 1
        err = one_error_line(capsys)
        assert "no trained model is installed yet" in err or "is missing" in err
        assert not out.exists()
        return
    # The shipped model: two real notes end to end (model, vocoder, engine, file).
    assert main(["render", str(path), "-o", str(out), "--sample-rate", "16000", "--quiet"]) == 0
    audio, rate = soundfile.read(out)
    assert rate == 16000 and audio.ndim == 2
    assert 0.01 < np.abs(audio).max() <= 1.0
    first, second = audio[: rate // 2].mean(axis=1), audio[rate // 2 + rate // 10 : rate].mean(axis=1)
    assert np.abs(first).max() > 0.005 and np.abs(second).max() > 0.005


def test_settings_are_checked(source, tmp_path):
    path = write_midi(tmp_path / "ok.mid", note(0, 480, 60))
    for bad, words in ((dict(sample_rate=100), "sample rate"), (dict(polyphony=0), "polyphony"),
                       (dict(tail="later"), "tail")):  # fmt: skip
        with pytest.raises(MarsError, match=words):
            render_to_array(path, settings(**bad), source)


def test_a_warm_render_with_the_shipped_model_never_imports_torch(tmp_path):
    """Every note cached: the render only mixes, so torch (seconds of start-up) stays unloaded,
    whatever --model-device says (auto, the default, is resolved only when the model loads)."""
    midi = write_midi(tmp_path / "one.mid", note(0, 480, 60))
    env = {k: v for k, v in os.environ.items() if k != "MARS_SYNTH_NOTE_SOURCE"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    render = [sys.executable, "-c", "import sys; from engine.bindings.cli import main; code = main(sys.argv[1:]); "
              "print('torch' in sys.modules); sys.exit(code)", "render", str(midi), "-o", str(tmp_path / "o.wav"), "-q"]  # fmt: skip
    cold = subprocess.run(render, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert cold.returncode == 0 and cold.stdout.strip() == "True", cold.stderr  # generated: the model loaded
    for extra in ([], ["--model-device", "auto"], ["--model-device", "cpu"]):
        warm = subprocess.run(render + extra, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        assert warm.returncode == 0 and warm.stdout.strip() == "False", (extra, warm.stderr)
