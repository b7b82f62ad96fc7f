"""Where does the tokenizer lose the instrument? Seen notes against held-out ones, and a probe of the tokens.

    python tools/diagnose_tokenizer.py                          # the shipped tokenizer
    python tools/diagnose_tokenizer.py --tokenizer runs/tok.pt --notes 320

For a seeded sample of notes of the train split and of the held-out valid and test splits
(the model's 24 programs), it prints a markdown table of:

* the evaluation classifier's family and pitch accuracy on the real notes and on their
  reconstructions;
* the L1 error of the reconstructions (normalised log spectrogram) and their perceptual
  distance (the decoder fine-tune's loss term, ``mars_model/tokenizer/perceptual.py``);
* a token probe: a small conv network trained to tell the family from the quantized latent
  of every train note, scored on each split. When the probe reads the family from held-out
  tokens about as well as the classifier does from real spectrograms, the tokens carry the
  instrument and what is lost is lost in the decoder.

With a tokenizer whose decoder has the instrument prior (``instrument_prior: true``), two more
columns show how much of the instrument comes from that label and how much from the tokens:
each note is decoded once more as another program of another family (three places further in
the program list), and the classifier's family is checked against the note's own family
("swap: tokens win") and the swapped-in family ("swap: label wins").
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import nn


def quantized(tok, x, pitch):
    """The quantized latent ``[B, D, H, W]`` of spectrograms ``x`` ``[B, 1, F, T]`` (what the decoder decodes)."""
    return tok.quantizer(tok.encode_latent(x, pitch))[0]


def latents(tok, specs, pitches, batch=64):
    """Quantized latents ``[N, D, H, W]`` of spectrograms ``specs`` ``[N, F, T]`` (a float16 array)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(specs), batch):
            x = torch.from_numpy(np.asarray(specs[s : s + batch], dtype=np.float32))[:, None]
            out.append(quantized(tok, x, torch.from_numpy(pitches[s : s + batch])))
    return torch.cat(out)


def train_probe(x, y, n_classes, epochs=20, seed=0):
    """A small conv classifier over latents ``x`` ``[N, D, H, W]``; returns ``predict(x) -> labels``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mu, sd = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    net = nn.Sequential(
        nn.Conv2d(x.shape[1], 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
        nn.AdaptiveAvgPool2d((4, 2)), nn.Flatten(), nn.Dropout(0.3), nn.Linear(512, n_classes),
    )  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(perm), 64):
            i = perm[s : s + 64]
            loss = nn.functional.cross_entropy(net((x[i] - mu) / sd), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def predict(z):
        with torch.no_grad():
            return torch.cat([net((z[s : s + 256] - mu) / sd).argmax(1) for s in range(0, len(z), 256)])

    return predict


def swapped_programs(programs):
    """``{program: another program of another family}``: three places on in the list, which
    holds each family's (at most three) programs next to each other."""
    return {p: programs[(i + 3) % len(programs)] for i, p in enumerate(programs)}


def split_row(tok, clf, perceptual, probe, notes, idx, swap=None, family_of=None):
    """Classifier and token-probe accuracies, L1 and perceptual distance for the notes ``idx``
    of one split (each note encoded once: the probe reads the latent the decoder decodes).
    With ``swap`` (program -> program) and ``family_of`` (program -> family), also the
    family heard when each note is decoded as its swapped program."""
    specs, cond = notes.spectrograms(), notes.conditions
    fam, pit, inst = cond["instrument_family"][idx], cond["pitch"][idx], cond["instrument"][idx]
    hits = {"real family": 0, "real pitch": 0, "recon family": 0, "recon pitch": 0, "token probe family": 0,
            "swap: tokens win": 0, "swap: label wins": 0}  # fmt: skip
    l1, dist = [], []
    with torch.no_grad():
        for s in range(0, len(idx), 32):
            part = idx[s : s + 32]
            x = torch.from_numpy(np.stack([np.asarray(specs[i], dtype=np.float32) for i in part]))[:, None]
            pitch = torch.from_numpy(pit[s : s + 32])
            latent = quantized(tok, x, pitch)
            recon = tok.decode_latent(latent, pitch, torch.from_numpy(inst[s : s + 32]))
            hits["token probe family"] += int((probe(latent).numpy() == fam[s : s + 32]).sum())
            for name, spec in (("real", x), ("recon", recon)):
                p_logits, f_logits = clf(spec[:, 0])
                hits[f"{name} family"] += int((f_logits.argmax(1).numpy() == fam[s : s + 32]).sum())
                hits[f"{name} pitch"] += int((p_logits.argmax(1).numpy() == pit[s : s + 32]).sum())
            if swap is not None:
                other = np.array([swap[int(i)] for i in inst[s : s + 32]])
                heard = clf(tok.decode_latent(latent, pitch, torch.from_numpy(other))[:, 0])[1].argmax(1).numpy()
                hits["swap: tokens win"] += int((heard == fam[s : s + 32]).sum())
                hits["swap: label wins"] += int((heard == np.array([family_of[int(o)] for o in other])).sum())
            l1.append(float((recon - x).abs().mean()) * len(part))
            dist.append(float(perceptual(recon, x)) * len(part))
    row = {k: v / len(idx) for k, v in hits.items()}
    row["L1"], row["perceptual"] = sum(l1) / len(idx), sum(dist) / len(idx)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/fluidr3")
    parser.add_argument("--tokenizer", help="tokenizer weights (default: the shipped ones)")
    parser.add_argument("--config", default="mars_model/configs/tokenizer.yaml",
                        help="recipe (or plain config) the programs (data.programs) are read from")  # fmt: skip
    parser.add_argument("--stage", help="the recipe's stage (default: its last)")
    parser.add_argument("--notes", type=int, default=640, help="notes per split (a seeded random sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mars_model.config import load_recipe
    from mars_model.data.build import FamilyMap
    from mars_model.data.noteset import NoteSet
    from mars_model.errors import MarsError
    from mars_model.eval.classifier import FAMILIES, load_classifier
    from mars_model.tokenizer.perceptual import load_perceptual
    from mars_model.weights_io import load_tokenizer, shipped_path

    try:
        recipe = load_recipe(args.config)
        programs = recipe.resolve(args.stage or recipe.names[-1]).get("data", {}).get("programs")
        tok = load_tokenizer(args.tokenizer or shipped_path("tokenizer.pt"))
        clf, perceptual = load_classifier(None), load_perceptual()
        splits = {name: NoteSet(args.data, name, programs=programs) for name in ("train", "valid", "test")}
    except (MarsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    train = splits["train"]
    print(f"token probe: latents of {len(train)} train notes ...", file=sys.stderr)
    probe = train_probe(latents(tok, train.spectrograms(), train.conditions["pitch"]),
                        torch.from_numpy(train.conditions["instrument_family"]).long(), len(FAMILIES), seed=args.seed)  # fmt: skip
    cols = ("real family", "recon family", "token probe family", "real pitch", "recon pitch", "L1", "perceptual")
    swap = family_of = None
    if tok.config.instrument_prior:
        swap = swapped_programs(sorted({int(p) for p in train.conditions["instrument"]}))
        family_of = {p: info.family_index for p, info in FamilyMap.load().programs.items()}
        cols += ("swap: tokens win", "swap: label wins")
    print("| split | notes | " + " | ".join(cols) + " |")
    print("| --- | ---: |" + " ---: |" * len(cols))
    for name, notes in splits.items():
        idx = np.sort(np.random.default_rng(args.seed).permutation(len(notes))[: args.notes])
        print(f"{name}: {len(idx)} notes ...", file=sys.stderr)
        row = split_row(tok, clf, perceptual, probe, notes, idx, swap, family_of)
        cells = [f"{row[c]:.4f}" if c in ("L1", "perceptual") else f"{100 * row[c]:.1f} %" for c in cols]
        print(f"| {name} | {len(idx)} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
