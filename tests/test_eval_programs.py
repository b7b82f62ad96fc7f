"""Per-instrument recognition by the GM classifier: the scoring and the table."""

import numpy as np
import pytest
import torch

from mars_model.api import FIRST_KIT
from mars_model.eval.classifier import ClassifierConfig, NoteClassifier
from mars_model.eval.programs import instrument_recognition

STANDARD = FIRST_KIT


def classifier_naming(instrument_for_loud: int, instrument_for_quiet: int, key: int) -> NoteClassifier:
    """A real classifier whose heads are set by hand: loud notes are named ``instrument_for_loud``,
    quiet ones ``instrument_for_quiet``; the pitch head always names ``key``."""
    net = NoteClassifier(ClassifierConfig(n_families=FIRST_KIT + 49)).eval()
    with torch.no_grad():
        # A trunk of positive weights and no biases: a positive input lights every feature, a
        # negative one none (ReLU).
        for layer in net.trunk.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.fill_(0.1)
                if layer.bias is not None:
                    layer.bias.zero_()
        for head in (net.family_head, net.pitch_head):
            head.weight.zero_()
            head.bias.zero_()
        net.pitch_head.bias[key] = 1.0
        # The family embedding is a ReLU of a linear map of the trunk: make one unit follow the
        # input's overall level, and let the head turn that unit into a choice between two classes.
        embed = net.family_embed[2]
        embed.weight.zero_()
        embed.bias.zero_()
        embed.weight[0] = 1.0 / embed.weight.shape[1]
        net.family_head.weight[instrument_for_loud, 0] = 1.0
        net.family_head.bias[instrument_for_quiet] = 0.5
    return net


def test_recognition_is_scored_per_instrument_relative_to_the_real_notes():
    net = classifier_naming(40, 0, key=38)
    loud, quiet = np.full((512, 256), 1.0, np.float32), np.full((512, 256), -1.0, np.float32)
    level = net.forward(torch.from_numpy(loud)[None])[1].argmax().item(), net.forward(torch.from_numpy(quiet)[None])[1].argmax().item()
    assert level == (40, 0), "the hand-set classifier names loud notes 40 and quiet ones 0"
    # Program 40: 4 real notes all loud (recognised), generated 2 of 4 loud. Program 0: real quiet
    # (recognised), generated loud (never). Standard kit, key 38: real quiet (named 0: wrong).
    real = np.stack([loud] * 4 + [quiet] * 2 + [quiet] * 2)
    generated = np.stack([loud, loud, quiet, quiet] + [loud] * 2 + [quiet] * 2)
    instruments = [40] * 4 + [0] * 2 + [STANDARD] * 2
    pitches = [60] * 4 + [60] * 2 + [38] * 2
    families = ["string"] * 4 + ["keyboard"] * 2 + ["percussion"] * 2
    table = instrument_recognition(net, real, generated, instruments, pitches, families)
    rows = {r.instrument: r for r in table.rows}
    assert (rows[40].real, rows[40].candidate, rows[40].ratio) == (1.0, 0.5, 0.5)
    assert (rows[0].real, rows[0].candidate, rows[0].ratio) == (1.0, 0.0, 0.0)
    assert rows[STANDARD].real == 0.0 and np.isnan(rows[STANDARD].ratio)
    assert table.median_ratio() == pytest.approx(0.25), "programs only: kits have their own line"
    assert table.overall_real == pytest.approx(6 / 8) and table.overall_candidate == pytest.approx(2 / 8)
    assert table.kit_notes == 2 and table.kit_pieces_real == 0.0
    text = table.to_markdown()
    assert "| string | 1 | 4 | 100.0% | 50.0% | 0.50 | program 40 0.50 |" in text
    assert "Drum kits (2 notes)" in text


def test_a_classifier_that_cannot_name_the_instruments_is_refused():
    net = NoteClassifier(ClassifierConfig()).eval()  # the eleven-family classifier
    specs = np.zeros((1, 512, 256), np.float32)
    with pytest.raises(ValueError, match="use the GM classifier"):
        instrument_recognition(net, specs, specs, [STANDARD], [38], ["percussion"])
