"""The drum-piece classifier: the shipped weights, the scoring of kit notes, and a tiny training run."""

import json

import numpy as np
import pytest
import torch

from mars_model.api import FIRST_KIT
from mars_model.errors import MarsError
from mars_model.eval.classifier import ClassifierConfig, NoteClassifier
from mars_model.eval.drums import (
    DEFAULT_DRUM_WEIGHTS,
    DRUM_TRAINING,
    drum_classifier_config,
    drum_pieces,
    load_drum_classifier,
    name_pieces,
    piece_labels,
    piece_names,
    piece_report,
)
from mars_model.eval.programs import instrument_recognition

STANDARD, ORCHESTRA = FIRST_KIT, FIRST_KIT + 48
RATE, SAMPLES = 16000, 64000


def test_the_shipped_drum_classifier_names_a_piece_for_each_note():
    assert DEFAULT_DRUM_WEIGHTS.stat().st_size < 2_000_000
    clf = load_drum_classifier()
    pieces = clf.info["pieces"]
    assert pieces == list(piece_names()) and clf.info["valid_family_accuracy"] >= 0.95
    specs = np.random.default_rng(0).uniform(-1, 0, (3, 512, 256)).astype(np.float16)
    named = name_pieces(clf, specs)
    assert named.shape == (3,) and ((0 <= named) & (named < len(pieces))).all()
    piece_logits = clf(torch.from_numpy(specs).float())[1]
    assert piece_logits.shape == (3, len(pieces))
    with pytest.raises(MarsError, match=r"expects \[B, 512, 256\]"):
        name_pieces(clf, specs[:, :, :128])


def test_the_gm_classifier_is_not_taken_for_a_drum_classifier(tmp_path):
    from mars_model.eval.classifier import save_classifier

    save_classifier(NoteClassifier(ClassifierConfig(n_families=FIRST_KIT + 49)), tmp_path / "gm.pt", {})
    with pytest.raises(MarsError, match="not a drum classifier"):
        load_drum_classifier(tmp_path / "gm.pt")


def drum_classifier_naming(piece: str) -> NoteClassifier:
    """A drum classifier whose piece head always names ``piece``."""
    clf = NoteClassifier(drum_classifier_config()).eval()
    clf.info = {"pieces": list(piece_names())}
    with torch.no_grad():
        clf.family_head.weight.zero_()
        clf.family_head.bias.zero_()
        clf.family_head.bias[piece_names().index(piece)] = 1.0
    return clf


def test_kit_pieces_are_scored_by_the_drum_classifier_when_given():
    gm = NoteClassifier(ClassifierConfig(n_families=FIRST_KIT + 49)).eval()
    with torch.no_grad():  # its pitch head names key 0 for every note: never a drum key
        gm.pitch_head.weight.zero_()
        gm.pitch_head.bias.zero_()
        gm.pitch_head.bias[0] = 1.0
    hat = drum_classifier_naming("Closed Hi-Hat")
    specs = np.zeros((4, 512, 256), np.float32)
    # Standard 42 is a closed hi-hat, Orchestra 42 a timpani, Orchestra 27 its closed hi-hat; program 0 no kit.
    instruments, keys = [STANDARD, ORCHESTRA, ORCHESTRA, 0], [42, 42, 27, 60]
    families = ["percussion"] * 3 + ["keyboard"]
    assert [piece_names()[i] for i in drum_pieces(hat, instruments[:3], keys[:3])] == \
        ["Closed Hi-Hat", "Timpani F#", "Closed Hi-Hat"]  # fmt: skip
    by_key = instrument_recognition(gm, specs, specs, instruments, keys, families)
    assert by_key.kit_pieces_real == 0.0 and "pitch head" in by_key.to_markdown()
    by_drums = instrument_recognition(gm, specs, specs, instruments, keys, families, drum_classifier=hat)
    assert by_drums.kit_notes == 3
    assert by_drums.kit_pieces_real == pytest.approx(2 / 3) and by_drums.kit_pieces_candidate == pytest.approx(2 / 3)
    assert "judged by the drum classifier" in by_drums.to_markdown()
    assert by_drums.overall_real == by_key.overall_real, "the instrument scores do not change"
    with pytest.raises(MarsError, match="not a kit"):
        drum_pieces(hat, [0], [42])


#: Four kit-like sounds: (key, noise band in Hz, decay time constant in s, low thump in Hz or 0).
SYNTHETIC_DRUMS = ((36, (40, 200), 0.15, 55.0), (38, (300, 3000), 0.12, 190.0),
                   (42, (5000, 7800), 0.03, 0.0), (49, (2500, 7800), 0.9, 0.0))  # fmt: skip


def synthetic_kit(root, split: str, velocities, seeds) -> None:
    """A kit split of noise bursts with different spectra and decays (the Standard kit's keys)."""
    import soundfile

    audio = root / split / "audio"
    audio.mkdir(parents=True)
    t = np.arange(SAMPLES) / RATE
    freqs = np.fft.rfftfreq(SAMPLES, 1 / RATE)
    examples = {}
    for key, (lo, hi), decay, thump in SYNTHETIC_DRUMS:
        for velocity in velocities:
            for seed in seeds:
                rng = np.random.default_rng([key, velocity, seed])
                spectrum = np.fft.rfft(rng.standard_normal(SAMPLES)) * ((freqs >= lo) & (freqs <= hi))
                wave = np.fft.irfft(spectrum, SAMPLES) / np.sqrt((hi - lo) / (RATE / 2))
                wave = (0.1 * wave + 0.5 * np.sin(2 * np.pi * thump * t)) * np.exp(-t / decay) * velocity / 127
                name = f"percussion_acoustic_128-{key:03d}-{velocity:03d}-{seed}"
                soundfile.write(audio / f"{name}.wav", wave.astype(np.float32), RATE)
                examples[name] = {"instrument": STANDARD, "instrument_family": 16, "pitch": key, "velocity": velocity,
                                  "bank": 128, "program": 0, "drum_kit_str": "Standard"}  # fmt: skip
    (root / split / "examples.json").write_text(json.dumps(examples))


def test_a_short_training_run_tells_synthetic_drums_apart(tmp_path):
    from dataclasses import replace

    from mars_model.data.noteset import NoteSet
    from mars_model.eval.training import train_classifier

    synthetic_kit(tmp_path, "train", velocities=(25, 60, 127), seeds=(0, 1))
    synthetic_kit(tmp_path, "valid", velocities=(40, 100), seeds=(2,))
    valid = NoteSet(tmp_path, "valid", banks=[128])
    assert sorted({piece_names()[i] for i in piece_labels(valid)}) == \
        ["Acoustic Snare", "Bass Drum 1", "Closed Hi-Hat", "Crash Cymbal 1"]  # fmt: skip
    torch.manual_seed(0)
    untrained = NoteClassifier(drum_classifier_config()).eval()
    untrained.info = {"pieces": list(piece_names())}
    before = piece_report(untrained, valid).accuracy
    settings = replace(DRUM_TRAINING, epochs=12, batch_size=8, patience=12)
    info = train_classifier(tmp_path, tmp_path / "drums.pt", settings, drum_classifier_config(), log=lambda _: None,
                            progress_bars=False, label=piece_labels, banks=[128],
                            extra_info={"pieces": list(piece_names())})  # fmt: skip
    report = piece_report(load_drum_classifier(tmp_path / "drums.pt"), valid)
    assert before <= 0.5, "an untrained network does not already know them"
    assert report.accuracy == 1.0 and report.notes == 8, report.to_markdown()
    assert info["train_notes"] == 24 and info["gain_db"] == DRUM_TRAINING.gain_db


def test_training_on_renditions_adds_each_note_as_rendered_and_names_renditions(tmp_path):
    from dataclasses import replace

    from mars_model.data.noteset import NoteSet
    from mars_model.eval.training import train_classifier

    def smeared(notes):
        """Every note with its attack smeared over 8 frames (128 ms), as a lossy model would."""
        specs = np.asarray(notes.spectrograms(), np.float32)
        kernel = np.ones(8, np.float32) / 8
        return np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 2, specs).astype(np.float16)

    seen = []
    synthetic_kit(tmp_path, "train", velocities=(25, 60, 127), seeds=(0, 1))
    synthetic_kit(tmp_path, "valid", velocities=(40, 100), seeds=(2,))
    settings = replace(DRUM_TRAINING, epochs=12, batch_size=8, patience=12)
    info = train_classifier(tmp_path, tmp_path / "drums.pt", settings, drum_classifier_config(), log=lambda _: None,
                            progress_bars=False, label=piece_labels, banks=[128],
                            extra_info={"pieces": list(piece_names())},
                            renditions=lambda notes: seen.append(notes.split) or smeared(notes))  # fmt: skip
    assert seen == ["train"], "renditions are trained on; validation stays on real notes"
    assert info["train_notes"] == 2 * 24
    valid = NoteSet(tmp_path, "valid", banks=[128])
    classifier = load_drum_classifier(tmp_path / "drums.pt")
    assert piece_report(classifier, valid).accuracy == 1.0
    assert piece_report(classifier, valid, smeared(valid)).accuracy == 1.0
