"""Evaluate the MARS model on held-out conditions: tokenizer reconstructions, generated notes, ceiling.

For every note of the test split (restricted to the model's instruments), the tokenizer
reconstructs it and the generator makes a note for its (instrument, pitch, velocity),
a condition never seen in training (the split holds out whole (instrument, pitch)
pairs). Both are scored against the real notes with the evaluation suite, next to the
real-vs-real ceiling (train notes against test notes).

    python tools/eval_model.py --out docs/eval            # shipped model, writes eval.md + eval.json
    python tools/eval_model.py --what generator --limit 64 --guidance 2   # quick look
    python tools/eval_model.py --data data/gm --stage gm1 --autoregressor runs/ar_gm1.pt \
        --gm-classifier mars_model/weights/eval_classifier_gm.pt --what generator

On a set with more than NSynth's eleven families (``--programs all``), the family metrics
score the notes of those eleven families only, so they stay comparable with a model trained on
them; ``--gm-classifier`` adds a table of every instrument's recognition (programs and drum
kits; ``mars_model.eval.programs``), real notes against reconstructed or generated ones; a kit
note's piece is judged by the drum classifier (``--drum-classifier``, default the shipped
``eval_drum_classifier.pt`` when the notes include kits).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def collection(notes, specs, name, waves=None):
    from mars_model.eval.suite import NoteCollection

    return NoteCollection.from_arrays(
        specs, notes.conditions["pitch"], notes.conditions["instrument_family"], notes.note_strs,
        waves=waves, name=name, sample_rate=notes.spectral.config.sample_rate,
    )  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="the note set (default: the recipe stage's data.root)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--config", default="mars_model/configs/autoregressor.yaml",
                        help="recipe (or plain config) the model's programs (data.programs) are read from")  # fmt: skip
    parser.add_argument("--stage", help="the recipe's stage (default: its last)")
    parser.add_argument("--tokenizer", help="tokenizer weights (default: shipped)")
    parser.add_argument("--autoregressor", help="autoregressor weights (default: shipped)")
    parser.add_argument("--what", default="ceiling,tokenizer,generator")
    parser.add_argument("--limit", type=int, help="evaluate a seeded random subset of this many notes")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pyin-notes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the autoregressor's precision (auto: bf16 on CPUs with native bf16)")
    parser.add_argument("--out", type=Path, help="directory for eval.md and eval.json")
    parser.add_argument("--gm-classifier", type=Path,
                        help="GM evaluation classifier (tools/train_gm_classifier.py): per-instrument table")  # fmt: skip
    parser.add_argument("--drum-classifier", type=Path,
                        help="drum-piece classifier for kit notes in the --gm-classifier table "
                             "(tools/train_drum_classifier.py; default: the shipped one when there are kit notes)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mars_model.api import FIRST_KIT, NoteRequest, Sampling
    from mars_model.config import load_recipe
    from mars_model.data.noteset import NoteSet
    from mars_model.eval.suite import Evaluator
    from mars_model.generator import load_generator
    from mars_model.weights_io import load_tokenizer, shipped_path

    recipe = load_recipe(args.config)
    data = recipe.resolve(args.stage or recipe.names[-1])["data"]
    programs = data["programs"]
    args.data = args.data or data["root"]
    notes = NoteSet(args.data, args.split, programs=programs)
    specs_all = notes.spectrograms()
    what = set(args.what.split(","))
    gen = load_generator(args.tokenizer, args.autoregressor, precision=args.precision) if "generator" in what else None
    rows = np.arange(len(notes))
    if gen is not None:  # the generator refuses pitches it was not trained on; score the same notes everywhere
        lo, hi = gen.pitch_range
        inside = (notes.conditions["pitch"] >= lo) & (notes.conditions["pitch"] <= hi)
        if not inside.all():
            print(f"left out {int((~inside).sum())} {args.split} notes outside the model's pitch range {lo}..{hi}",
                  file=sys.stderr)  # fmt: skip
        rows = rows[inside]
    if args.limit and args.limit < len(rows):
        rows = rows[np.sort(np.random.default_rng(args.seed).choice(len(rows), args.limit, replace=False))]
    real = collection(notes, specs_all, f"real {args.split}", waves=notes.load_audio).subset(rows)
    # The family metrics know NSynth's eleven families: they score those notes only.
    nsynth = np.flatnonzero(notes.conditions["instrument_family"][rows] < NSYNTH_FAMILIES)
    if len(nsynth) < len(rows):
        print(f"family metrics: the {len(nsynth)} of {len(rows)} notes in NSynth's families", file=sys.stderr)
    evaluator = Evaluator(pyin_notes=args.pyin_notes, progress=True, ndb_bins=min(50, len(nsynth) // 2))
    gm_classifier = None
    if args.gm_classifier:
        from mars_model.eval.classifier import load_classifier

        gm_classifier = load_classifier(args.gm_classifier)
    drum_classifier = None
    if args.gm_classifier and (args.drum_classifier or (notes.conditions["instrument"][rows] >= FIRST_KIT).any()):
        from mars_model.eval.drums import load_drum_classifier

        drum_classifier = load_drum_classifier(args.drum_classifier)

    def per_instrument(candidate_specs, label):
        from mars_model.eval.programs import instrument_recognition

        table = instrument_recognition(gm_classifier, np.asarray(specs_all[rows], np.float32), candidate_specs,
                                       notes.conditions["instrument"][rows], notes.conditions["pitch"][rows],
                                       [notes.labels["instrument_family_str"][r] for r in rows], label,
                                       drum_classifier=drum_classifier)  # fmt: skip
        sections.append((f"Instruments recognised by the GM classifier ({label})", table.to_markdown()))
        return table.to_dict()
    results, sections = {}, []

    if "ceiling" in what:
        train = NoteSet(args.data, "train", programs=programs)
        pick = np.sort(np.random.default_rng(1).choice(len(train), min(len(train), 2 * len(rows)), replace=False))
        train_coll = collection(train, train.spectrograms(), "real train", waves=train.load_audio).subset(pick)
        report = evaluator.compare(train_coll, real.subset(nsynth), paired=False)
        results["ceiling"] = report.to_dict()
        sections.append(("Real vs real (train notes vs test notes)", report.to_markdown("train", "test")))

    if "tokenizer" in what:
        tokenizer = load_tokenizer(args.tokenizer or shipped_path("tokenizer.pt"))
        recon, used = [], set()
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(rows), 16):
                batch = rows[start : start + 16]
                x = torch.from_numpy(np.asarray(specs_all[batch], dtype=np.float32))[:, None]
                pitch = torch.from_numpy(notes.conditions["pitch"][batch])
                out, indices, _ = tokenizer(x, pitch, torch.from_numpy(notes.conditions["instrument"][batch]))
                recon.append(out[:, 0].numpy())
                for idx in indices:
                    used.update(idx.flatten().tolist())
        recon = np.concatenate(recon)
        sub = notes_subset_names(notes, rows)
        coll = collection_from(sub, recon, "tokenizer reconstruction")
        report = evaluator.compare(real.subset(nsynth), coll.subset(nsynth), paired=True)
        results["tokenizer"] = {**report.to_dict(), "codebook_usage": len(used) / tokenizer.quantizer.codebook_size,
                                "seconds": time.perf_counter() - started}  # fmt: skip
        sections.append((f"Tokenizer reconstructions (codebook usage {len(used) / tokenizer.quantizer.codebook_size:.0%})",
                         report.to_markdown("real", "reconstructed")))  # fmt: skip
        if gm_classifier is not None:
            results["tokenizer"]["instruments"] = per_instrument(recon, "reconstructed")

    if gen is not None:
        sampling = Sampling(args.temperature, args.top_k, args.top_p, args.guidance)
        cond = notes.conditions
        requests = [NoteRequest(int(cond["instrument"][r]), int(cond["pitch"][r]), int(cond["velocity"][r]),
                                seed=args.seed + int(r), sampling=sampling) for r in rows]  # fmt: skip
        waves, specs = [], []
        started = time.perf_counter()
        from tqdm import tqdm

        for start in tqdm(range(0, len(requests), 16), desc="generating", unit="batch"):
            w, s = gen.generate(requests[start : start + 16], return_spectrograms=True)
            waves.extend(w)
            specs.append(s[:, 0].numpy())
        seconds = time.perf_counter() - started
        sub = notes_subset_names(notes, rows)
        coll = collection_from(sub, np.concatenate(specs), "generated", waves=waves)
        report = evaluator.compare(real.subset(nsynth), coll.subset(nsynth), paired=True)
        results["generator"] = {**report.to_dict(), "sampling": vars(sampling) if hasattr(sampling, "__dict__") else str(sampling),
                                "seconds": seconds, "notes": len(requests)}  # fmt: skip
        sections.append((f"Generated notes for held-out conditions ({sampling})", report.to_markdown("real", "generated")))
        if gm_classifier is not None:
            results["generator"]["instruments"] = per_instrument(np.concatenate(specs), "generated")

    text = "\n\n".join(f"### {title}\n\n{body}" for title, body in sections)
    header = (f"Evaluation on {len(rows)} {args.split} notes of {len(set(notes.conditions['instrument'][rows]))} instruments "
              f"(`python tools/eval_model.py {' '.join(argv or sys.argv[1:])}`)\n\n")  # fmt: skip
    print(header + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "eval.md").write_text(header + text + "\n")
        (args.out / "eval.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


#: NSynth's instrument families (indices 0-10); ours (synth pad ... percussion) come after.
NSYNTH_FAMILIES = 11


def notes_subset_names(notes, rows):
    return {"pitch": notes.conditions["pitch"][rows], "family": notes.conditions["instrument_family"][rows],
            "names": [notes.note_strs[r] for r in rows], "rate": notes.spectral.config.sample_rate}  # fmt: skip


def collection_from(sub, specs, name, waves=None):
    from mars_model.eval.suite import NoteCollection

    return NoteCollection.from_arrays(specs, sub["pitch"], sub["family"], sub["names"], waves=waves, name=name,
                                      sample_rate=sub["rate"])  # fmt: skip


def run(argv=None) -> int:
    """:func:`main`, with bad input (a missing set, weights file or config) as one error line."""
    from mars_model.errors import MarsError

    try:
        return main(argv)
    except (MarsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
