"""``mars-synth note``: one generated note to a WAV (and a PNG), with one-line errors for bad input."""

import os
import subprocess
import sys

import pytest
import soundfile

from engine.bindings.note_command import parse_morph, parse_pitch
from mars_model.errors import MarsError

# A real NoteGenerator built from the tiny test models (untrained weights), loaded by the
# engine's note-source hook: the command runs end to end in about a second.
FACTORY = "tests.test_note_command:tiny_generator"


def tiny_generator():
    from mars_model.generator import NoteGenerator
    from tests.tiny_models import tiny_tokenizer

    programs = [0, 4, 11, 16, 24, 33, 40, 48, 52, 56, 65, 73, 80]  # every shipped preset's program
    return NoteGenerator(tiny_tokenizer(), tiny_autoregressor_for(programs), instruments=programs,
                         pitch_range=(21, 108), model_id="tiny", vocoder_iters=2, coarse_scales=1)  # fmt: skip


def tiny_autoregressor_for(programs):
    from mars_model.autoregressor import build_autoregressor
    from tests.tiny_models import TINY_AR, TINY_TOKENIZER

    cfg = type(TINY_AR)(**{**TINY_AR.to_dict(), "n_instruments": 128})
    q = TINY_TOKENIZER
    return build_autoregressor(cfg, q.scales, q.latent_dim, q.codebook_size).eval()


def must_not_load():
    raise AssertionError("the note source was loaded")


def note(*args, tmp_path, factory=FACTORY, prelude=""):
    """``mars-synth note ARGS`` in a subprocess; ``prelude`` is Python run before the CLI starts."""
    env = {**os.environ, "MARS_SYNTH_NOTE_SOURCE": factory, "PYTHONPATH": os.getcwd()}
    code = f"import sys\n{prelude}\nfrom engine.bindings.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "note", *args], capture_output=True,
                          text=True, env=env, cwd=os.getcwd(), stdin=subprocess.DEVNULL)  # fmt: skip


def test_writes_a_note_and_a_picture(tmp_path):
    out, png = tmp_path / "n.wav", tmp_path / "n.png"
    proc = note("--preset", "grand_piano", "--pitch", "C4", "--velocity", "90", "-o", str(out), "--png", str(png),
                "--seed", "3", tmp_path=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = soundfile.info(out)
    assert info.samplerate == 48000 and info.channels == 1 and info.frames > 0  # render's rate by default
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The summary is a report, not data: stderr, like render's; stdout stays empty.
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"mars-synth note: wrote {out}: grand_piano, pitch 60, velocity 90, seed 3, ")
    assert " s at 48000 Hz, peak " in lines[0]
    again = tmp_path / "again.wav"
    note("--preset", "grand_piano", "--pitch", "60", "--velocity", "90", "-o", str(again), "--seed", "3",
         tmp_path=tmp_path)  # fmt: skip
    assert again.read_bytes() == out.read_bytes(), "same preset, pitch, velocity and seed: same file"


def test_morph_and_resampling(tmp_path):
    out = tmp_path / "m.wav"
    proc = note("--preset", "grand_piano", "--pitch", "64", "--morph", "strings:0.3", "--sample-rate", "44100",
                "-o", str(out), "--model-device", "cpu", tmp_path=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert soundfile.info(out).samplerate == 44100
    same_rate = tmp_path / "16k.wav"
    assert note("--preset", "grand_piano", "--pitch", "64", "--sample-rate", "16000", "-o", str(same_rate),
                tmp_path=tmp_path).returncode == 0  # fmt: skip
    assert soundfile.info(same_rate).samplerate == 16000


def test_a_rate_below_the_models_warns_in_one_line_and_writes_the_note(tmp_path):
    out = tmp_path / "low.wav"
    proc = note("--preset", "grand_piano", "--pitch", "60", "--sample-rate", "8000", "-o", str(out),
                tmp_path=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == ("mars-synth note: warning: --sample-rate 8000 is below the notes' 16000 Hz; "
                        "everything above 4000 Hz (half the output rate) is cut")  # fmt: skip
    assert len(lines) == 2 and lines[1].startswith(f"mars-synth note: wrote {out}")
    assert soundfile.info(out).samplerate == 8000


@pytest.mark.parametrize("rate", ["0", "-16000", "10000000"])
def test_a_nonsense_rate_is_one_error_line_before_anything_runs(tmp_path, rate):
    out = tmp_path / "x.wav"
    proc = note("--preset", "grand_piano", "--pitch", "60", "--sample-rate", rate, "-o", str(out),
                tmp_path=tmp_path, factory="tests.test_note_command:must_not_load")  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"mars-synth note: error: --sample-rate must be 8000..192000 Hz, got {rate}"
    assert not out.exists()


def test_png_without_matplotlib_is_one_line_naming_the_extra_and_generates_nothing(tmp_path):
    out, png = tmp_path / "n.wav", tmp_path / "n.png"
    # matplotlib stays installed; this process sees it as missing (None in sys.modules fails its import),
    # and the note source fails loudly if anything tries to generate.
    proc = note("--preset", "grand_piano", "--pitch", "60", "-o", str(out), "--png", str(png), tmp_path=tmp_path,
                factory="tests.test_note_command:must_not_load", prelude="sys.modules['matplotlib'] = None")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("mars-synth note: error: --png needs matplotlib, which is not installed: "
                                   "pip install 'mars-synth[plot]' (from a checkout: pip install '.[plot]')")  # fmt: skip
    assert not out.exists() and not png.exists()


def test_the_plot_extra_names_matplotlib():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(req.startswith("matplotlib") for req in extras["plot"])
    for extra in ("eval", "test"):  # these keep drawing too
        assert any(req.startswith("matplotlib") for req in extras[extra])


def test_guidance_and_temperature_override_the_preset(tmp_path):
    plain, guided = tmp_path / "plain.wav", tmp_path / "guided.wav"
    common = ["--preset", "grand_piano", "--pitch", "60", "--seed", "5"]
    assert note(*common, "-o", str(plain), tmp_path=tmp_path).returncode == 0
    proc = note(*common, "--guidance", "2", "--temperature", "0.9", "-o", str(guided), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert guided.read_bytes() != plain.read_bytes()


def test_a_preset_the_model_does_not_know_plays_its_stand_in_with_one_warning(tmp_path):
    pad, strings = tmp_path / "pad.wav", tmp_path / "strings.wav"
    proc = note("--preset", "warm_pad", "--pitch", "C4", "-o", str(pad), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warnings == ["mars-synth note: warning: GM program 89 is not in this model; played with 48"]
    assert note("--preset", "strings", "--pitch", "C4", "-o", str(strings), tmp_path=tmp_path).returncode == 0
    assert pad.read_bytes() == strings.read_bytes()  # the tiny model's GM 48, as the strings preset plays it


@pytest.mark.parametrize("args,needle", [
    (["--preset", "no_such_preset", "--pitch", "60"], "unknown preset"),
    (["--preset", "grand_piano", "--pitch", "60", "--velocity", "0"], "velocity must be in 1..127"),
    (["--preset", "grand_piano", "--pitch", "120"], "outside this model's range"),
    (["--preset", "grand_piano", "--pitch", "H9"], "note name"),
    (["--preset", "grand_piano", "--pitch", "60", "--morph", "strings:2"], "WEIGHT in 0..1"),
    (["--preset", "grand_piano", "--pitch", "60", "--guidance", "-1"], "guidance must be >= 0"),
    (["--preset", "grand_piano", "--pitch", "60", "--temperature", "0"], "temperature must be > 0"),
])  # fmt: skip
def test_bad_input_is_one_line(tmp_path, args, needle):
    proc = note(*args, "-o", str(tmp_path / "x.wav"), tmp_path=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_corrupt_weight_file_is_one_line(tmp_path):
    from mars_model.generator import load_generator

    bad = tmp_path / "ar.pt"
    bad.write_bytes(b"PK\x03\x04 not really a torch file")
    tok = tmp_path / "tok.pt"
    tok.write_bytes(b"")
    with pytest.raises(MarsError, match="corrupt|not a mars-synth"):
        load_generator(tok, bad)


def test_pitch_and_morph_parsing():
    assert parse_pitch("C4") == 60 and parse_pitch("A4") == 69 and parse_pitch("F#3") == 54
    assert parse_pitch("Bb2") == 46 and parse_pitch("60") == 60
    assert parse_morph("strings:0.25") == ("strings", 0.25)
    with pytest.raises(MarsError):
        parse_morph("strings")
