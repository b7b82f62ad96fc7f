"""Benchmark note generation on the path the product takes.

The notes are the distinct notes ``render`` needs for a real file (default: the dense
orchestral example), each with its preset's own sampling settings (the presets use
temperature 0.95 and top-p 0.95), so the mix of instruments, pitches and velocities is the
one a user's cold render meets. Measured, as medians of ``--repeats`` runs after one
warm-up, with the coarse-scale cache emptied before every run:

* one note at batch 1, the whole path (autoregressor, decoder, vocoder): what a live key
  press waits for when its note is not cached;
* 16 notes through :meth:`NoteGenerator.generate` (one call, every op on all threads), and
  each stage of it alone per note;
* every note of the file through :meth:`NoteGenerator.generate_batches`, batch 16, as
  ``render`` calls it (on a CPU with 2+ threads: pipelined, decoder and vocoder on a second
  thread): the notes/s a cold render generates at.

    python tools/bench_generate.py                       # shipped model, CPU
    python tools/bench_generate.py --midi song.mid --repeats 5
    python tools/bench_generate.py --model-device cuda --backend compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from engine.midi.midifile import read_midi_file
from engine.midi.program_map import ProgramMap
from engine.note_cache import NoteCache
from engine.render import RenderReport, plan_notes
from mars_model.api import NoteRequest
from mars_model.generator import NoteGenerator, load_generator

REPO = Path(__file__).resolve().parents[1]


def render_requests(midi: Path, generator: NoteGenerator) -> list[NoteRequest]:
    """The requests a cold ``render`` of ``midi`` makes: its distinct notes, with the presets'
    settings and the notes' velocity layers, in the order the render asks for them."""
    cache = NoteCache(48000, generator, generator.model_id, progress=False)
    plan = plan_notes(read_midi_file(midi, 48000), ProgramMap.load(None), cache, RenderReport(sample_rate=48000))
    keys = list(dict.fromkeys(p.key for p in plan if p is not None))
    return [cache.request(key) for key in keys]


def median_seconds(fn, repeats: int, before=None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up; ``before()`` runs untimed first."""
    times = []
    for i in range(repeats + 1):
        if before:
            before()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--midi", type=Path, default=REPO / "examples" / "orchestra_dense.mid",
                        help="the file whose distinct notes are generated")  # fmt: skip
    parser.add_argument("--model-device", default="cpu", help="torch device")
    parser.add_argument("--backend", default="eager", choices=("eager", "compile", "cuda-graphs", "tensorrt"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = load_generator(device=args.model_device, backend=args.backend, precision=args.precision)
    requests = render_requests(args.midi, gen)
    batch = requests[:16]
    fresh = gen.clear_coarse_cache
    results: dict[str, tuple[float, int]] = {}  # name -> (seconds, notes)

    results["one note, batch 1 (whole path)"] = (median_seconds(lambda: gen.generate(batch[:1]), args.repeats, fresh), 1)
    results["batch 16, generate()"] = (median_seconds(lambda: gen.generate(batch), args.repeats, fresh), 16)
    latents = gen.generate_latents(batch)
    specs = gen.decode(latents)
    results["  autoregressor"] = (median_seconds(lambda: gen.generate_latents(batch), args.repeats, fresh), 16)
    results["  tokenizer decoder"] = (median_seconds(lambda: gen.decode(latents), args.repeats), 16)
    results["  vocoder (Griffin-Lim)"] = (median_seconds(lambda: gen.vocode_notes(specs), args.repeats), 16)

    def every_note() -> None:
        for _ in gen.generate_batches(requests, 16):
            pass

    results[f"render path, {len(requests)} notes, batch 16"] = (
        median_seconds(every_note, max(1, args.repeats // 2), fresh), len(requests))

    print(f"# bench_generate: {args.midi.name} ({len(requests)} distinct notes, presets' sampling); device "
          f"{gen.device}, backend {gen.backend}, precision {gen.precision}, {torch.get_num_threads()} threads; "
          f"medians of {args.repeats} runs")  # fmt: skip
    print("| measurement | wall | per note | notes/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, (seconds, notes) in results.items():
        print(f"| {name} | {seconds * 1000:.0f} ms | {seconds * 1000 / notes:.1f} ms | {notes / seconds:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({k: {"seconds": s, "notes": n} for k, (s, n) in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
