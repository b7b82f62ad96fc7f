"""tools/eval_model.py: the notes it scores, and bad input as one line."""

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "eval_model", Path(__file__).resolve().parent.parent / "tools" / "eval_model.py"
)
eval_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_model)


def test_notes_outside_the_models_pitch_range_are_left_out_everywhere(tmp_path, capsys):
    from tests.tiny_models import tiny_note_set

    tiny_note_set(tmp_path / "data", pitches=(60, 62, 108), instruments=(0, 4))  # the shipped model was trained on 21..107
    (tmp_path / "data" / "train").rename(tmp_path / "data" / "valid")
    (tmp_path / "cfg.yaml").write_text("data: {programs: [0, 4]}\n")
    rc = eval_model.run(["--data", str(tmp_path / "data"), "--split", "valid", "--config", str(tmp_path / "cfg.yaml"),
                         "--what", "tokenizer,generator", "--pyin-notes", "0", "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 0
    assert "left out 2 valid notes outside the model's pitch range 21..107" in capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert results["generator"]["notes"] == 4
    assert "Evaluation on 4 valid notes" in (tmp_path / "out" / "eval.md").read_text()


def test_a_missing_note_set_is_one_error_line(tmp_path, capsys):
    assert eval_model.run(["--data", str(tmp_path / "none"), "--what", "tokenizer"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no examples.json" in err
