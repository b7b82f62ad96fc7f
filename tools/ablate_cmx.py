"""CMX ablation: the same tokenizer trained with CMX vs on the full spectrogram without CMX.

Both variants get the same data, seed, steps, batch and (within a few %) the same
parameter count. The no-CMX variant reaches the same 16 x 8 latent grid from the full
512 x 256 spectrogram with five stride-2 levels instead of CMX (16, 8) plus two. Each
variant trains in its own process so that its peak memory is its own.

    python tools/ablate_cmx.py --steps 150 --batch 8 > ablation.md
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "CMX (16, 8)": {},
    "no CMX (full 512x256)": {"cmx": [1, 1], "channels": [24, 32, 48, 64, 96, 128], "strides": [[2, 2]] * 5},
}


def run_variant(name: str, args) -> dict:
    import numpy as np
    import torch

    from mars_model.config import load_recipe
    from mars_model.data.noteset import NoteSet
    from mars_model.spectral import SpectralFrontEnd, log_spectral_distance
    from mars_model.tokenizer import TokenizerConfig, build_tokenizer
    from mars_model.tokenizer.train import load_split, reconstruction_loss
    from mars_model.training import train

    torch.set_num_threads(args.threads)
    config = load_recipe(args.config).resolve(args.stage)
    config["data"]["root"] = args.data
    config["tokenizer"].update(VARIANTS[name])
    config["train"].update({"steps": args.steps, "batch_size": args.batch, "warmup": 20,
                            "checkpoint_every": 10**9, "log_every": 10})  # fmt: skip
    cfg = TokenizerConfig.from_dict(config["tokenizer"])
    notes = load_split(config, "train", cfg)
    specs = np.asarray(notes.spectrograms())
    model = build_tokenizer(cfg, seed=0)
    params = sum(p.numel() for p in model.parameters())
    step_times: list[float] = []

    pitches = torch.from_numpy(notes.conditions["pitch"])

    def fetch(idx):
        step_times.append(time.perf_counter())
        idx = np.sort(idx)
        return {"spec": torch.from_numpy(specs[idx].astype(np.float32))[:, None], "pitch": pitches[idx]}

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as run:
        train(model, reconstruction_loss(config.get("loss", {})), notes, config, run,
              device=torch.device("cpu"), fetch=fetch, quiet=True)  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_step = statistics.median(np.diff(step_times)[5:])

    valid = NoteSet(args.data, "valid", SpectralFrontEnd(cfg.spectral), programs=config["data"].get("programs"))
    vspecs = np.asarray(valid.spectrograms())
    pick = np.random.default_rng(0).choice(len(valid), size=min(args.eval_notes, len(valid)), replace=False)
    model.eval()
    l1, mse, lsd, used = [], [], [], set()
    front = SpectralFrontEnd(cfg.spectral)
    with torch.no_grad():
        for start in range(0, len(pick), 8):
            rows = np.sort(pick[start : start + 8])
            x = torch.from_numpy(vspecs[rows].astype(np.float32))[:, None]
            recon, indices, _ = model(x, torch.from_numpy(valid.conditions["pitch"][rows]))
            l1.append(float((recon - x).abs().mean()))
            mse.append(float((recon - x).pow(2).mean()))
            lsd += log_spectral_distance(front.log_to_magnitude(x[:, 0]), front.log_to_magnitude(recon[:, 0])).tolist()
            for idx in indices:
                used.update(idx.flatten().tolist())
    return {"variant": name, "params": params, "train_peak_mb": (peak - baseline) / 1024,
            "seconds_per_step": per_step, "l1": statistics.mean(l1), "mse": statistics.mean(mse),
            "lsd_db": statistics.mean(lsd), "codebook_usage": len(used) / cfg.codebook_size}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="mars_model/configs/tokenizer.yaml", help="the tokenizer recipe")
    parser.add_argument("--stage", default="base", help="its stage whose settings both variants train with")
    parser.add_argument("--data", default="data/fluidr3")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-notes", type=int, default=64)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return 0
    rows = []
    for name in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", name] + [a for a in (argv or sys.argv[1:])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"CMX ablation: {args.steps} steps of batch {args.batch}, {args.threads} thread(s), "
          f"reconstruction of {args.eval_notes} valid notes")  # fmt: skip
    print("| variant | params | training peak memory | time / step | L1 | MSE | LSD (dB) | codebook used |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['variant']} | {r['params'] / 1e6:.2f} M | {r['train_peak_mb']:.0f} MB | "
              f"{r['seconds_per_step']:.2f} s | {r['l1']:.4f} | {r['mse']:.4f} | {r['lsd_db']:.2f} | "
              f"{r['codebook_usage']:.0%} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
