"""Can a tokenizer represent every General MIDI instrument? Reconstruction errors by family.

    python tools/measure_tokenizer_gm.py --data data/gm                     # the shipped tokenizer
    python tools/measure_tokenizer_gm.py --data data/gm --tokenizer runs/tokenizer_gm.pt --per-family 60

For a seeded sample of notes of each family (valid split by default; the drum kits are the
``percussion`` family), the tokenizer encodes, quantizes and decodes each note, and the tool
prints a markdown table per family of:

* ``latent error``: the share of the continuous latent's energy the quantized pyramid leaves
  out, ``|z - q(z)|^2 / |z|^2``. It depends on the encoder and codebook only, which a decoder
  fine-tune keeps frozen, so it says whether the *tokens* can hold the sound;
* ``L1`` on the normalised log-spectrogram and ``LSD`` (log-spectral distance, dB, -80 dB
  floor) of the reconstruction, which also depends on the decoder.

Notes of instruments the decoder's instrument prior was trained on are decoded as themselves;
the others (the prior's table row was never trained) as the even mix of the trained ones, and
the ``trained`` column says how many of a family's notes were. The rows of the trained
programs are the reference: a family whose errors are far above theirs needs more than a
decoder fine-tune.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def reconstruct(tok, specs, pitches, instruments, trained, batch=32):
    """Reconstructions ``[N, F, T]`` and the per-note latent error of ``specs`` ``[N, F, T]``."""
    n = tok.config.n_instruments
    mix = torch.zeros(n)
    mix[sorted(trained)] = 1.0 / len(trained)
    recon, errors = [], []
    with torch.no_grad():
        for start in range(0, len(specs), batch):
            x = torch.from_numpy(np.asarray(specs[start : start + batch], dtype=np.float32))[:, None]
            p = torch.from_numpy(pitches[start : start + batch])
            z = tok.encode_latent(x, p)
            q = tok.quantizer(z)[0]
            errors.append(((z - q) ** 2).sum(dim=(1, 2, 3)) / (z**2).sum(dim=(1, 2, 3)))
            weights = torch.stack([
                torch.nn.functional.one_hot(torch.tensor(int(i)), n).float() if int(i) in trained else mix
                for i in instruments[start : start + batch]
            ])  # fmt: skip
            recon.append(tok.decode_latent(q, p, weights if tok.config.instrument_prior else None)[:, 0].numpy())
    return np.concatenate(recon), torch.cat(errors).numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/gm", help="a note set built with --programs all")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--tokenizer", help="tokenizer weights (default: shipped)")
    parser.add_argument("--per-family", type=int, default=40, help="notes sampled per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mars_model.data.noteset import NoteSet
    from mars_model.eval.metrics import paired_spectrogram_errors
    from mars_model.weights_io import SHIPPED, load_model, shipped_path

    loaded = load_model(args.tokenizer or shipped_path(SHIPPED["tokenizer"]), "tokenizer")
    tok = loaded.model
    trained = set((loaded.meta.get("data") or {}).get("programs") or [])
    if not trained:
        print("the tokenizer's weights do not say which programs it was trained on", file=sys.stderr)
        return 1
    notes = NoteSet(args.data, args.split)
    specs = notes.spectrograms()
    families = notes.labels["instrument_family_str"]
    rng = np.random.default_rng(args.seed)
    rows = ["| family | notes | trained | latent error | L1 | LSD (dB) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    groups = [("trained programs (reference)", np.flatnonzero(np.isin(notes.conditions["instrument"], list(trained))))]
    for family in sorted(set(families)):
        groups.append((family, np.flatnonzero(np.array(families) == family)))
    for name, idx in groups:
        pick = np.sort(rng.choice(idx, min(args.per_family, len(idx)), replace=False))
        inst = notes.conditions["instrument"][pick]
        real = np.asarray(specs[pick], dtype=np.float32)
        recon, err = reconstruct(tok, real, notes.conditions["pitch"][pick], inst, trained)
        scores = paired_spectrogram_errors(real, recon)
        n_trained = int(np.isin(inst, list(trained)).sum())
        rows.append(f"| {name} | {len(pick)} | {n_trained} | {err.mean():.3f} | {scores['mae']:.4f} | {scores['lsd_db']:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
