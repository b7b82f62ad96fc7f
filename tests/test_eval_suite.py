"""The evaluation suite end to end on tiny NSynth-layout sets of synthesized notes, and its CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.bindings.cli import main
from mars_model.errors import MarsError
from mars_model.eval import (
    ClassifierConfig,
    Evaluator,
    NoteClassifier,
    NoteCollection,
    evaluate_ceiling,
    evaluate_dirs,
    load_classifier,
)
from mars_model.eval.classifier import save_classifier
from mars_model.eval.pitch import midi_to_hz

RATE = 16000
FAMILY_HARMONICS = {0: (1.0, 0.5, 0.25), 4: (1.0, 0.0, 0.33, 0.0, 0.2), 9: (1.0,) * 8}


def synth_note(pitch: int, family: int, velocity: int, detune: float = 0.0) -> np.ndarray:
    """4 s note: a family-specific harmonic recipe at ``pitch``, 3 s held, 1 s release."""
    t = np.arange(4 * RATE) / RATE
    f0 = midi_to_hz(pitch + detune)
    partials = FAMILY_HARMONICS[family]
    wave = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t)
               for k, a in enumerate(partials) if f0 * (k + 1) < 7500)  # fmt: skip
    env = np.clip(t / 0.02, 0, 1) * np.where(t < 3, 1.0, np.exp(-(t - 3) * 6))
    return (0.25 * velocity / 127 * wave * env).astype(np.float32)


def write_set(split_dir: Path, notes: list[dict], detune: float | dict = 0.0, noise: float = 0.0) -> None:
    """Write an NSynth-layout split: examples.json + audio/<note_str>.wav.

    ``detune`` (semitones) is one value for every note or a ``{note_str: semitones}`` map."""
    audio = split_dir / "audio"
    audio.mkdir(parents=True)
    rng = np.random.default_rng(0)
    examples = {}
    for note in notes:
        shift = detune.get(note["note_str"], 0.0) if isinstance(detune, dict) else detune
        wave = synth_note(note["pitch"], note["instrument_family"], note["velocity"], shift)
        wave = wave + noise * rng.normal(size=wave.shape).astype(np.float32)
        soundfile.write(audio / f"{note['note_str']}.wav", wave, RATE, subtype="PCM_16")
        examples[note["note_str"]] = {**note, "sample_rate": RATE}
    (split_dir / "examples.json").write_text(json.dumps(examples))


def make_notes(pitches=range(48, 73, 2), families=(0, 4, 9), velocities=(50, 100)) -> list[dict]:
    return [
        {"note_str": f"synth_{fam}-{p:03d}-{v:03d}", "pitch": p, "velocity": v,
         "instrument": fam * 8, "instrument_family": fam}
        for fam in families for p in pitches for v in velocities
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Path:
    """real/{train,test}, an exact copy of real test, a noisy copy, and detuned namesakes."""
    root = tmp_path_factory.mktemp("eval_sets")
    notes = make_notes()
    write_set(root / "real" / "test", notes)
    write_set(root / "real" / "train", make_notes(pitches=range(49, 73, 2)))
    write_set(root / "copy" / "test", notes)
    write_set(root / "noisy" / "test", notes, noise=0.05)
    write_set(root / "detuned" / "test", notes[::10], detune=1.0)  # 8 notes, for pYIN
    return root


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(ndb_bins=5, pyin_notes=0, progress=False)


@pytest.fixture(scope="module")
def reports(sets, evaluator) -> dict:
    return {name: evaluate_dirs(sets / "real", sets / name, evaluator=evaluator)
            for name in ("copy", "noisy")}  # fmt: skip


def test_identical_sets_score_zero_distance(reports):
    copy, noisy = reports["copy"], reports["noisy"]
    d = copy.distances
    # Unbiased KID of a set against itself is -2 (mean k(x,x) - mean k(x,y)) / n: a small
    # negative number that vanishes as 1/n (n = 78 here), tiny beside a real difference.
    for key in ("pkid", "ikid"):
        assert d[key] <= 0 and abs(d[key]) < 0.1 * noisy.distances[key], key
    assert d["pitch_frechet"] < 1e-3 and d["family_frechet"] < 1e-3
    assert d["ndb"] == 0
    assert copy.paired == {"mse": 0.0, "mae": 0.0, "lsd_db": 0.0, "notes": len(make_notes())}
    assert copy.candidate_scores["pis"] == pytest.approx(copy.reference_scores["pis"])


def test_a_degraded_set_is_farther_than_a_copy(reports):
    copy, noisy = reports["copy"], reports["noisy"]
    for key in ("pkid", "ikid", "pitch_frechet", "family_frechet", "ndb"):
        assert noisy.distances[key] > copy.distances[key] + 1e-3, key
    assert noisy.paired["mse"] > 0.01 and noisy.paired["lsd_db"] > 1.0


@pytest.mark.slow  # librosa's pYIN compiles with numba on first use (~10 s)
def test_detuned_notes_fail_pyin_and_real_notes_pass(sets):
    evaluator = Evaluator(ndb_bins=5, pyin_notes=None, progress=False)
    report = evaluate_dirs(sets / "real", sets / "detuned", evaluator=evaluator)
    assert report.reference_scores["pyin_accuracy"] == 1.0
    assert report.candidate_scores["pyin_accuracy"] == 0.0
    assert report.details["pyin"]["notes"] == 8


@pytest.mark.slow  # pYIN
def test_pitched_notes_are_the_ones_whose_real_note_reads_at_its_label(tmp_path):
    # Three real notes sound an octave below their label (like a 16' organ stop): pYIN on
    # all notes cannot reach 1 even for a perfect copy, the pitched-notes score can.
    notes = make_notes()[::10]
    low = {n["note_str"]: -12.0 for n in notes[:3]}
    write_set(tmp_path / "real" / "test", notes, detune=low)
    write_set(tmp_path / "copy" / "test", notes, detune=low)
    write_set(tmp_path / "sharp" / "test", notes, detune=1.0)
    evaluator = Evaluator(ndb_bins=2, pyin_notes=None, progress=False)
    copy = evaluate_dirs(tmp_path / "real", tmp_path / "copy", evaluator=evaluator)
    assert copy.reference_scores["pyin_accuracy"] == pytest.approx(5 / 8)
    assert copy.candidate_scores["pyin_accuracy"] == pytest.approx(5 / 8)
    assert copy.candidate_scores["pyin_accuracy_pitched"] == 1.0
    assert copy.details["pyin_pitched_notes"] == 5
    sharp = evaluate_dirs(tmp_path / "real", tmp_path / "sharp", evaluator=evaluator)
    assert sharp.candidate_scores["pyin_accuracy_pitched"] == 0.0
    assert "pitched notes" in sharp.to_markdown()


def test_in_memory_reconstructions_pair_with_their_real_notes(sets, evaluator):
    real = NoteCollection.from_dir(sets / "real", "test", progress=False)
    half = np.arange(0, len(real), 2)
    recon = NoteCollection.from_arrays(
        np.asarray(real.specs[half]) + 0.02, real.pitch[half], real.family[half],
        [real.note_strs[i] for i in half],
    )  # fmt: skip
    report = evaluator.compare(real, recon)
    assert report.reference["notes"] == len(half)  # restricted to the rebuilt notes
    assert report.details["reference_restricted_from"] == len(real)
    assert report.paired["mae"] == pytest.approx(0.02, abs=1e-4)


def test_ceiling_scores_one_real_split_against_another(sets, evaluator):
    report = evaluate_ceiling(sets / "real", "train", "test", evaluator)
    assert report.paired == {}
    assert report.reference["notes"] == len(make_notes(pitches=range(49, 73, 2)))
    assert "not paired" in report.to_markdown()


def test_shuffled_labels_drop_accuracy_to_chance(sets, evaluator):
    """The shipped classifier knows the pitch of synthetic tones; shuffled labels are ~chance."""
    real = NoteCollection.from_dir(sets / "real", "test", progress=False)
    out = evaluator.describe(real)
    true = evaluator.set_scores(real, out, None)["pitch_accuracy"]
    rng = np.random.default_rng(0)
    shuffled = [
        evaluator.set_scores(
            NoteCollection.from_arrays(real.specs, rng.permutation(real.pitch), real.family),
            out, None,
        )["pitch_accuracy"]
        for _ in range(20)
    ]  # fmt: skip
    chance = 1 / len(np.unique(real.pitch))  # 13 pitches, equally often
    assert true >= 0.9
    assert np.mean(shuffled) == pytest.approx(chance, abs=0.03)


def test_saved_classifier_loads_back_identically(tmp_path):
    import torch

    model = NoteClassifier(ClassifierConfig(channels=(4, 4, 4, 4), embed_dim=8)).eval()
    save_classifier(model, tmp_path / "c.pt", {"note": "test"})
    loaded = load_classifier(tmp_path / "c.pt")
    spec = torch.rand(2, 512, 256) * 2 - 1
    for a, b in zip(model(spec), loaded(spec), strict=True):
        torch.testing.assert_close(a, b)
    assert loaded.info == {"note": "test"}


# -- errors ---------------------------------------------------------------------------------
def test_mismatched_names_are_refused_when_pairing_is_required(sets, tmp_path, evaluator):
    write_set(tmp_path / "other" / "test", make_notes(pitches=(50,), families=(0,)))
    renamed = json.loads((tmp_path / "other/test/examples.json").read_text())
    (tmp_path / "other/test/examples.json").write_text(
        json.dumps({f"x{k}": v for k, v in renamed.items()}))  # fmt: skip
    for k in renamed:
        (tmp_path / f"other/test/audio/{k}.wav").rename(tmp_path / f"other/test/audio/x{k}.wav")
    with pytest.raises(MarsError, match="mismatched sets"):
        evaluate_dirs(sets / "real", tmp_path / "other", paired=True, evaluator=evaluator)
    report = evaluate_dirs(sets / "real", tmp_path / "other", evaluator=evaluator)
    assert report.paired == {}  # auto: not paired, distances still computed
    assert np.isfinite(report.distances["pkid"])


def test_cli_writes_markdown_and_json(sets, tmp_path, capsys):
    code = main(["eval", str(sets / "real"), str(sets / "copy"), "--ndb-bins", "5",
                 "--pyin-notes", "0", "--quiet", "--json", str(tmp_path / "r.json"),
                 "--markdown", str(tmp_path / "r.md")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "| PKID (pitch features) ↓ |" in out and "| NDB/k ↓ | – | 0.0000 |" in out
    assert (tmp_path / "r.md").read_text() == out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["distances"]["ndb"] == 0 and report["paired"]["mse"] == 0.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{tmp}/nowhere", "{sets}/copy"], "is not a directory"),
        (["{tmp}", "{sets}/copy"], "no examples.json"),
        (["{sets}/real", "{tmp}/empty"], "lists no notes"),
        (["{sets}/real", "{sets}/copy", "--ceiling"], "give only REAL_DIR"),
        (["{sets}/real"], "give REAL_DIR and GEN_DIR"),
        (["{sets}/real", "{sets}/copy", "--classifier", "{tmp}/none.pt"], "no evaluation classifier"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_error_line(sets, tmp_path, capsys, argv, message):
    (tmp_path / "empty" / "test").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "examples.json").write_text("{}")
    argv = [a.format(tmp=tmp_path, sets=sets) for a in argv]
    code = main(["eval", *argv, "--quiet", "--pyin-notes", "0", "--ndb-bins", "5"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("mars-synth eval: error:")
    assert message in err


def test_sets_of_different_spectrogram_shapes_are_refused(sets, evaluator):
    real = NoteCollection.from_dir(sets / "real", "test", progress=False)
    small = NoteCollection.from_arrays(np.zeros((10, 256, 128)), real.pitch[:10], real.family[:10])
    with pytest.raises(MarsError, match=r"mismatched sets: .*\[512, 256\]"):
        evaluator.compare(real, small)


def test_a_file_that_is_not_a_classifier_is_one_clear_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MarsError, match="cannot read the evaluation classifier"):
        load_classifier(tmp_path / "junk.pt")


def test_the_classifier_trainer_learns_the_label_it_is_told_and_refuses_a_missing_one(sets, tmp_path):
    from mars_model.eval.training import ClassifierTraining, train_classifier

    root = tmp_path / "set"
    root.mkdir()
    (root / "train").symlink_to(sets / "real" / "train")
    (root / "valid").symlink_to(sets / "real" / "test")
    settings = ClassifierTraining(epochs=1, batch_size=16)
    info = train_classifier(root, tmp_path / "clf.pt", settings, ClassifierConfig(n_families=128),
                            log=lambda _: None, progress_bars=False, label="instrument")  # fmt: skip
    assert info["label"] == "instrument" and info["epochs_run"] == 1
    assert load_classifier(tmp_path / "clf.pt").family_head.out_features == 128
    with pytest.raises(MarsError, match="no label field 'timbre'"):
        train_classifier(root, tmp_path / "bad.pt", settings, log=lambda _: None, progress_bars=False,
                         label="timbre")  # fmt: skip
    with pytest.raises(MarsError, match="instrument labels must be 0..10"):  # programs 0..72 > 11 classes
        train_classifier(root, tmp_path / "bad.pt", settings, log=lambda _: None, progress_bars=False,
                         label="instrument")  # fmt: skip
