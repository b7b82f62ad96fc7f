"""Benchmark note generation: one 4 s note at batch 1 and notes/s at batch 16.

Times the whole path a user waits for — autoregressor, tokenizer decoder, vocoder — and
each part alone, with and without the KV cache and the coarse-scale cache. Reports the
median of ``--repeats`` runs after ``--warmup`` runs.

    python tools/bench_generate.py                     # shipped model, CPU
    python tools/bench_generate.py --device cuda --backend compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from mars_model.api import NoteRequest, Sampling
from mars_model.generator import load_generator


def timed(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vocoder-iters", type=int, default=None)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the autoregressor's precision (auto: bf16 on CPUs/GPUs with native bf16)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {"backend": args.backend, "precision": args.precision}
    if args.vocoder_iters is not None:
        options["vocoder_iters"] = args.vocoder_iters
    gen = load_generator(device=args.device, **options)
    programs = list(gen.instruments)
    sampling = Sampling(temperature=1.0, top_k=0, top_p=1.0, guidance=0.0)

    def requests(n: int, seed: int = 0) -> list[NoteRequest]:
        return [NoteRequest(programs[i % len(programs)], 60 + i % 12, 100, seed=seed + i, sampling=sampling)
                for i in range(n)]  # fmt: skip

    results = {}
    for batch in (1, 16):
        reqs = requests(batch)
        for kv in (True, False):
            counter = iter(range(10**9))

            def ar_only(kv=kv, reqs=reqs, counter=counter):
                # A fresh seed each call so the coarse cache never hits here.
                fresh = [NoteRequest(r.instrument, r.pitch, r.velocity, seed=1000 + next(counter), sampling=r.sampling)
                         for r in reqs]  # fmt: skip
                return gen.generate_spectrograms(fresh, use_kv_cache=kv, use_coarse_cache=False)

            results[f"model b{batch} kv={kv}"] = timed(ar_only, args.repeats, args.warmup)
        gen.generate_spectrograms(reqs)  # fill the coarse cache for these conditions
        results[f"model b{batch} kv=True coarse-cached"] = timed(
            lambda reqs=reqs: gen.generate_spectrograms(reqs), args.repeats, args.warmup)
        spec = gen.generate_spectrograms(reqs)
        results[f"vocoder b{batch}"] = timed(lambda spec=spec: gen.vocode(spec), args.repeats, args.warmup)
        counter2 = iter(range(10**9))
        results[f"total b{batch} (kv, no coarse cache)"] = timed(
            lambda reqs=reqs, c=counter2: gen.vocode(gen.generate_spectrograms(
                [NoteRequest(r.instrument, r.pitch, r.velocity, seed=5000 + next(c), sampling=r.sampling) for r in reqs],
                use_coarse_cache=False)), args.repeats, args.warmup)  # fmt: skip
        counter4 = iter(range(10**9))
        results[f"total b{batch} (no kv, no coarse cache)"] = timed(
            lambda reqs=reqs, c=counter4: gen.vocode(gen.generate_spectrograms(
                [NoteRequest(r.instrument, r.pitch, r.velocity, seed=7000 + next(c), sampling=r.sampling) for r in reqs],
                use_kv_cache=False, use_coarse_cache=False)), args.repeats, args.warmup)  # fmt: skip
        results[f"total b{batch} (kv, coarse-cached)"] = timed(
            lambda reqs=reqs: gen.vocode(gen.generate_spectrograms(reqs)), args.repeats, args.warmup)

    # Many notes at batch 16, as `render` makes them: with 2+ threads on a CPU the model makes
    # batch i+1 while a second thread vocodes batch i (NoteGenerator.generate_many).
    counter3 = iter(range(10**9))
    many = 6 * 16
    pipelined = gen.device.type == "cpu" and torch.get_num_threads() >= 2
    label = "pipelined, " if pipelined else ""
    results[f"total b16 ({label}{many} notes, kv, no coarse cache) per 16"] = timed(
        lambda c=counter3: gen.generate_many(
            [NoteRequest(r.instrument, r.pitch, r.velocity, seed=20000 + next(c), sampling=r.sampling)
             for r in requests(many)], 16),
        args.repeats, 1) / (many / 16)  # fmt: skip

    print(f"device {args.device}, backend {gen.backend}, precision {gen.precision}, threads {torch.get_num_threads()}, "
          f"vocoder iters {gen.vocoder_iters}, median of {args.repeats} after {args.warmup} warm-up")  # fmt: skip
    print("| measurement | median | per note | notes/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in results.items():
        batch = 16 if "b16" in name else 1
        print(f"| {name} | {seconds * 1000:.1f} ms | {seconds * 1000 / batch:.1f} ms | {batch / seconds:.1f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
