"""Live play's latency and real-time behaviour, measured through JACK (dummy backend).

What it measures, with ``mars-synth play`` running as the real command in its own process:

* engine-added latency: event in -> first non-zero output sample, in JACK frames, read by a
  JACK client connected to the engine's outputs. MIDI events are written by that client at a
  known frame (the start of a cycle) into the engine's JACK MIDI port; OSC messages are sent
  over UDP, stamped with JACK's frame clock just before sending. Median and p99, for cached
  notes (generated ahead) and uncached ones (the exact note not generated yet: the engine
  plays the nearest ready pitch; the exact note's generation time is reported as well).
* the audio callback's time as a share of the block (the engine's own measurement).
* a long run with many voices held: underflows the engine saw, and which JACK clients
  jackd names as late - the engine, or a C reference client (jack_metro) on the same CPUs,
  the yardstick of what the machine does to any real-time client.
* the engine's memory (RSS) over the long run.
* the long run again with the effects off (``--effects both``, the default): the callback's
  share of the block with reverb and chorus working (the held voices' channel sends CC91 40,
  the power-on value, and CC93 64) and with ``--no-reverb --no-chorus``.

Notes come from the tests' additive instrument unless ``--note-source model`` (the trained
MARS model) or another ``module:factory`` is given.

    python tools/bench_latency.py                       # the full run: 200 notes each, 10 min with 64 voices
    python tools/bench_latency.py --notes 60 --long 60  # shortened
    python tools/bench_latency.py --long-only --long 30 # only the long runs (effects on, then off)
    python tools/bench_latency.py --in-process          # the callback alone, effects on and off interleaved

``--in-process`` needs no JACK: it calls the audio callback object (``BlockRenderer``) directly,
128-frame blocks at 48 kHz with 64 voices held, alternating block by block between an engine
with the effects on (reverb; chorus sent CC93 64) and one with them off, so a busy spell of
the machine weighs on both alike. It reports the callback's own statistic (time as a share
of the block, median and p99), without the thread wake-ups of a real stream, and what the
reverb and the chorus cost on their own per block.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from test_jack_live import (  # noqa: E402 - the harness lives with the integration tests
    SOURCE_SPEC,
    EnginePlayer,
    JackProbe,
    JackServer,
    ReferenceClient,
)


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_silent(engine: EnginePlayer, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        voices = engine.osc.query("voices", timeout=0.5)
        if voices is not None and voices[0] == 0:
            return
        time.sleep(0.01)


def measure_notes(engine: EnginePlayer, probe: JackProbe, notes: list[tuple[int, int]], via: str,
                  hold: float = 0.15) -> list[int]:  # fmt: skip
    """Play notes one at a time; returns each one's latency in frames (event -> first sound)."""
    rng = np.random.default_rng(0)
    latencies = []
    for pitch, velocity in notes:
        wait_silent(engine)
        time.sleep(float(rng.uniform(0.01, 0.03)))  # land anywhere in the cycle
        if via == "midi":
            sent = probe.send_midi(bytes([0x90, pitch, velocity]))
        else:
            sent = probe.now()
            engine.osc.send("/mars/note", pitch, velocity)
        onset = probe.first_sound(sent, timeout=10.0, level=0.0)  # the first non-zero sample
        if onset is None:
            raise RuntimeError(f"note {pitch} never sounded:\n{engine.output()}")
        latencies.append(onset - sent)
        time.sleep(hold)
        if via == "midi":
            probe.send_midi(bytes([0x80, pitch, 0]))
        else:
            engine.osc.send("/mars/note_off", pitch)
    return latencies


def stats(frames: list[int], rate: int, block: int) -> dict:
    """Median, p99, max in ms, and the share of notes whose sound starts within one block of the
    event. A note's first output sample is the zero its attack ramp starts from, so its sound
    starts one sample before the first non-zero sample measured."""
    ms = np.asarray(frames, np.float64) * 1000 / rate
    starts = np.asarray(frames) - 1
    return {"n": len(frames), "median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3), "within_1_block": round(float(np.mean(starts <= block)), 3)}  # fmt: skip


def uncached_notes(count: int) -> list[tuple[int, int]]:
    """Notes far enough apart (pitch and velocity bucket) that none was generated as another's neighbour."""
    notes = []
    for velocity in (25, 50, 75, 100, 127):
        for pitch in range(36, 97, 6):
            notes.append((pitch, velocity))
    order = np.random.default_rng(1).permutation(len(notes))
    return [notes[i] for i in order[:count]]


def measure_latency(server, work: Path, args, source: str, rate: int, results: dict) -> None:
    """Latency of cached and uncached notes, MIDI and OSC, into ``results``."""
    # Cached: the preset's range at velocity 100 is generated ahead before measuring.
    # Dry: the onset is the first non-zero sample, which a reverb tail of the last note would hide.
    dry = ("--no-reverb", "--no-chorus")
    engine = EnginePlayer(server, work, "--preset", args.preset, "--virtual-midi", "mars-synth", *dry, source=source)
    try:
        engine.wait_ready(timeout=3600)
        probe = JackProbe(server, seconds=30).start()
        try:
            pitches = [int(p) for p in np.random.default_rng(2).integers(40, 90, args.notes)]
            midi = measure_notes(engine, probe, [(p, 100) for p in pitches], "midi")
            osc = measure_notes(engine, probe, [(p, 100) for p in pitches], "osc")
            results["cached_midi"] = stats(midi, rate, args.period)
            results["cached_osc"] = stats(osc, rate, args.period)
            share = engine.osc.query("latency")
            results["callback_share_few_voices"] = {"median": round(share[0], 4), "p99": round(share[1], 4)}
        finally:
            probe.close()
    finally:
        engine.stop()
    # Uncached: nothing generated ahead, and notes far apart; a fresh cache.
    (work / "cold").mkdir()
    engine = EnginePlayer(server, work / "cold", "--preset", args.preset, "--virtual-midi", "mars-synth",
                          "--no-precompute", *dry, source=source)  # fmt: skip
    try:
        engine.wait_ready(timeout=3600)
        probe = JackProbe(server, seconds=30).start()
        try:
            first = measure_notes(engine, probe, [(60, 100)], "midi")  # nothing ready at all: waits for the model
            notes = uncached_notes(min(args.notes, 55))
            cold = measure_notes(engine, probe, notes, "midi", hold=0.3)
            status = engine.osc.query("status")
            results["first_note_cold_ms"] = round(first[0] * 1000 / rate, 2)
            results["uncached_midi"] = stats(cold, rate, args.period)
            results["uncached_played_from_nearest"] = status[4]
            results["model_seconds_per_note"] = round(status[8], 4)
        finally:
            probe.close()
    finally:
        engine.stop()


def long_run(server, work: Path, args, source: str, rate: int, effects: str) -> dict:
    """Many voices held for ``args.long`` seconds with the effects ``on`` or ``off``."""
    # Long run: many voices held (looping), underflows, late clients, memory.
    flags = [] if effects == "on" else ["--no-reverb", "--no-chorus"]
    engine = EnginePlayer(server, work, "--preset", "strings", "--no-midi", *flags, source=source)
    try:
        engine.wait_ready(timeout=3600)
        engine.osc.send("/mars/cc", 1, 93, 64)  # the chorus too (CC91 is 40 from power-on)
        for pitch in range(36, 36 + args.voices):
            engine.osc.send("/mars/note", pitch, 100)
        time.sleep(3.0)
        server.reference.follow(engine.process.pid)
        at = server.log_position()
        before = engine.osc.query("status")[1]
        memory = []
        started = time.monotonic()
        while time.monotonic() - started < args.long:
            memory.append(rss_mib(engine.process.pid))
            time.sleep(min(5.0, args.long / 10))
        status = engine.osc.query("status")
        share = engine.osc.query("latency")
        late = server.late_clients(at)
        return {
            "seconds": args.long, "voices": status[0], "underflows": status[1] - before,
            "late_cycles_engine": late.get("PortAudio", 0), "late_cycles_reference_c_client": late.get(ReferenceClient.NAME, 0),
            "cycles": int(args.long * rate / args.period),
            "callback_share_median": round(share[0], 4), "callback_share_p99": round(share[1], 4),
            "rss_mib_first": round(memory[0], 1), "rss_mib_at_10_percent": round(memory[len(memory) // 10], 1),
            "rss_mib_last": round(memory[-1], 1), "rss_mib_max": round(max(memory), 1),
        }  # fmt: skip
    finally:
        engine.stop()


def in_process(voices: int, blocks: int, rate: int = 48000, block: int = 128) -> dict:
    """The audio callback's share of a block with ``voices`` held, effects on and off, interleaved."""
    from test_engine_harmonic_source import HarmonicNoteSource

    from engine.live.renderer import BlockRenderer
    from engine.synth import Patch, Synth, prepare_note
    from engine.synth.effects import DRY, EffectsSettings
    from mars_model.api import NoteRequest

    pitches = list(range(36, 36 + voices))
    waves = HarmonicNoteSource().generate([NoteRequest(48, p, 100) for p in pitches])
    notes = [prepare_note(w, 16000, rate, p) for p, w in zip(pitches, waves, strict=True)]

    class Flags:
        output_underflow = False

    renderers = {}
    for name, effects in (("on", EffectsSettings()), ("off", DRY)):
        synth = Synth(rate, voices, 1024, 0.5, effects, block)
        synth.control_change(0, 93, 64)  # the chorus too (CC91 is 40 from power-on)
        for pitch, note in zip(pitches, notes, strict=True):
            synth.note_on(0, pitch, 100, note, Patch())
        renderers[name] = BlockRenderer(synth)
    out = np.zeros((block, 2), np.float32)
    for _ in range(200):  # warm up, and past the notes' attacks
        for renderer in renderers.values():
            renderer(out, block, None, Flags())
    for renderer in renderers.values():
        renderer.blocks = 0
    for _ in range(blocks):
        for renderer in renderers.values():
            renderer(out, block, None, Flags())
    results = {}
    for name, renderer in renderers.items():
        median, p99 = renderer.callback_share()
        results[f"callback_share_effects_{name}"] = {"median": round(median, 4), "p99": round(p99, 4)}
    results["effects_alone_us_per_block"] = effects_alone(rate)
    results.update(voices=voices, blocks=min(blocks, 4096), block=block, rate=rate,
                   load_average=[round(x, 2) for x in os.getloadavg()])  # fmt: skip
    return results


def effects_alone(rate: int) -> dict:
    """Microseconds per block of the reverb and the chorus on their own (noise in, best of 5
    runs of 200 blocks): 128-frame blocks as live play steps them, 4096 as ``render`` does."""
    from engine.synth.effects import Chorus, Reverb

    send = (np.random.default_rng(0).standard_normal((2, 4096)) * 0.1).astype(np.float32)
    out = np.zeros((2, 4096), np.float32)
    timings = {}
    for name, effect, frames in (("reverb_128", Reverb(rate, 1024, chunk=128), 128),
                                 ("chorus_128", Chorus(rate, 1024), 128),
                                 ("reverb_4096", Reverb(rate, 4096), 4096),
                                 ("chorus_4096", Chorus(rate, 4096), 4096)):  # fmt: skip
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(200):
                effect.process(send, out, frames)
            best = min(best, (time.perf_counter() - started) / 200)
        timings[name] = round(best * 1e6, 1)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--period", type=int, default=128, help="JACK period in frames (default 128)")
    parser.add_argument("--notes", type=int, default=200, help="notes per latency measurement (default 200)")
    parser.add_argument("--long", type=float, default=600.0, help="seconds of the long run (default 600)")
    parser.add_argument("--voices", type=int, default=64, help="voices held during the long run (default 64)")
    parser.add_argument("--preset", default="drawbar_organ", help="preset (default drawbar_organ: short release)")
    parser.add_argument("--note-source", default=SOURCE_SPEC, help="module:factory, or 'model' for MARS")
    parser.add_argument("--effects", choices=["on", "off", "both"], default="both",
                        help="long run with reverb and chorus on, off, or one of each (default both)")  # fmt: skip
    parser.add_argument("--long-only", action="store_true", help="skip the latency measurements")
    parser.add_argument("--in-process", action="store_true",
                        help="no JACK: the callback alone, effects on and off interleaved (see above)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.in_process:
        results = in_process(args.voices, 4096)
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    source = "" if args.note_source == "model" else args.note_source
    rate = 48000
    results: dict = {"period": args.period, "rate": rate, "preset": args.preset, "note_source": args.note_source or "model"}
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    server = JackServer(period=args.period).start()
    server.reference = ReferenceClient(server)
    try:
        if not args.long_only:
            measure_latency(server, work, args, source, rate, results)
        for effects in (("on", "off") if args.effects == "both" else (args.effects,)):
            results[f"long_run_effects_{effects}"] = long_run(server, work, args, source, rate, effects)
    finally:
        server.reference.stop()
        server.stop()
        server.log.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    os.environ.pop("JACK_DEFAULT_SERVER", None)


if __name__ == "__main__":
    main()
