"""Benchmark ``mars-synth render`` against the FluidSynth CLI on the same MIDI files, in one run.

    nice -n 10 python tools/bench_render.py                       # examples/*.mid, the shipped model
    nice -n 10 python tools/bench_render.py --note-source test_engine_harmonic_source:HarmonicNoteSource

Each tool runs as a separate process (start-up, file loading and writing included, as a
user would see it), ``--repeats`` times; the table shows medians. For mars-synth:

* **cold**: an empty note cache, so every distinct note is generated (and prepared);
* **warm**: the cache the cold runs filled, so the render only mixes.

FluidSynth renders with ``fluidsynth -ni -F OUT -r RATE SOUNDFONT IN.mid`` (its defaults,
reverb and chorus on), and mars-synth with its defaults (reverb and chorus on, each channel
sending CC91 40 from power-on). The last columns repeat the warm comparison with the effects
off on both sides (``-R 0 -C 0``; ``--no-reverb --no-chorus``), so the effects' own cost
shows. Peak memory is each process's maximum resident set size (wait4).
Targets: warm at least as fast as FluidSynth; cold at least 5x real time on the dense example
(``examples/orchestra_dense.mid``, 185 distinct notes in 68 s, the density of real orchestral
music: 100-170 distinct notes a minute).
``--in-process`` times the warm render inside this process instead (``render_to_array`` on a
filled cache: the mixing alone, without start-up, model id, note loading or the WAV), effects
on and off interleaved, next to FluidSynth's whole process with its effects on and off.
Python modules are byte-compiled first and the runs may use the compiled files (as after
``pip install``, which compiles the package), whatever ``PYTHONDONTWRITEBYTECODE`` says;
otherwise every run would compile the whole engine again. ``--warm-only`` skips the cold
runs (one render fills the cache) when only the mixing is being compared.
``--note-source module:factory`` renders with another NoteSource (``MARS_SYNTH_NOTE_SOURCE``;
``tests/`` and ``tools/`` are put on the path) while no trained model is installed: the
tests' additive instrument (``test_engine_harmonic_source:HarmonicNoteSource``) or notes
rendered from the SoundFont like the training set (``bench_render:SoundFontNoteSource``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile

REPO = Path(__file__).resolve().parents[1]
SOUNDFONTS = (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/TimGM6mb.sf2"))


class SoundFontNoteSource:
    """Reference NoteSource: notes rendered by FluidSynth from a GM SoundFont exactly as the
    training set is built (``mars_model.data.build.render_notes``: 4 s at 16 kHz, held 3 s).

    It is not the model. It lets the engine be heard and timed with notes like the ones MARS
    learns from, before a trained model ships (``--note-source bench_render:SoundFontNoteSource``).
    A morph plays its heaviest program. ``MARS_BENCH_SOUNDFONT`` picks the SoundFont.
    """

    sample_rate = 16000
    pitch_range = (21, 108)

    def __init__(self, soundfont: Path | None = None) -> None:
        chosen = soundfont or os.environ.get("MARS_BENCH_SOUNDFONT")
        self.soundfont = Path(chosen) if chosen else next(sf for sf in SOUNDFONTS if sf.is_file())
        self.model_id = f"soundfont-{self.soundfont.stem}"

    def generate(self, requests):
        """float32 ``[len(requests), 64000]``, one FluidSynth run per program."""
        import numpy as np

        from mars_model.data.build import render_notes

        out = np.zeros((len(requests), 64000), np.float32)
        by_program: dict[int, list[int]] = {}
        for row, request in enumerate(requests):
            weights = request.instrument_weights()
            by_program.setdefault(max(weights, key=weights.get), []).append(row)
        for program, rows in by_program.items():
            notes = render_notes(self.soundfont, program, [(requests[r].pitch, requests[r].velocity) for r in rows])
            out[rows] = notes
        return out


def timed_run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run a command; returns (wall s, CPU s (user + system), peak resident memory MiB). Raises on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_render: {' '.join(command)} failed ({proc.returncode}): {stderr.strip()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def in_process(files: list[Path], args: argparse.Namespace, soundfont: Path, fluidsynth: str,
               env: dict[str, str]) -> int:  # fmt: skip
    """Warm mixing time in this process, effects on and off, beside FluidSynth's whole process."""
    sys.path[:0] = [str(REPO / "tests"), str(REPO / "tools"), str(REPO)]
    os.environ.update(env)
    from engine.model import default_note_source
    from engine.render import RenderSettings, render_to_array
    from engine.synth.effects import DRY, EffectsSettings

    source = default_note_source("cpu")
    print(f"# bench_render --in-process: {args.repeats} repeats, medians; {args.sample_rate} Hz; notes from "
          f"{args.note_source or 'the shipped model'}; FluidSynth whole process with {soundfont.name}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'file':<20} {'audio s':>7} | {'effects':>7} {'mix cpu s':>9} {'x RT':>6} | {'fluidsynth cpu s':>16} | {'cpu ratio':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp_name:
        tmp = Path(tmp_name)
        for midi in files:
            def settings(effects, cache=tmp / f"cache-{midi.stem}"):
                return RenderSettings(sample_rate=args.sample_rate, progress=False, cache_dir=cache, effects=effects)

            render_to_array(midi, settings(DRY), source)  # fills the cache
            runs: dict[str, list[float]] = {"on": [], "off": []}
            fluid: dict[str, list[float]] = {"on": [], "off": []}
            seconds = {}
            for _ in range(args.repeats):
                for name, effects, flags in (("on", EffectsSettings(), []), ("off", DRY, ["-R", "0", "-C", "0"])):
                    started = time.process_time()
                    audio, _ = render_to_array(midi, settings(effects), source)
                    runs[name].append(time.process_time() - started)
                    seconds[name] = audio.shape[1] / args.sample_rate
                    fluid[name].append(timed_run([fluidsynth, "-ni", "-q", "-F", str(tmp / "fluid.wav"), "-r",
                                                  str(args.sample_rate), *flags, str(soundfont), str(midi)])[1])  # fmt: skip
            for name in ("on", "off"):
                ours, theirs = statistics.median(runs[name]), statistics.median(fluid[name])
                print(f"{midi.name:<20} {seconds[name]:7.2f} | {name:>7} {ours:9.3f} {seconds[name] / ours:6.1f} | "
                      f"{theirs:16.3f} | {ours / theirs:9.2f}")  # fmt: skip
    print("mix cpu s: render_to_array's CPU time on a warm cache (no start-up); x RT: audio seconds per CPU second; "
          "cpu ratio < 1: the mixing costs less than FluidSynth's whole run (its start-up, about 0.3 s, included)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("midi", nargs="*", type=Path, help="MIDI files (default: examples/*.mid)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--soundfont", type=Path, help="SoundFont for FluidSynth (default: FluidR3_GM, else TimGM6mb)")
    parser.add_argument("--note-source", metavar="MODULE:FACTORY", help="render with this NoteSource instead of the model")
    parser.add_argument("--in-process", action="store_true", help="time the warm mixing in this process (see above)")
    parser.add_argument("--warm-only", action="store_true", help="skip the cold runs: one render fills the cache")
    args = parser.parse_args(argv)
    files = args.midi or sorted((REPO / "examples").glob("*.mid"))
    soundfont = args.soundfont or next((sf for sf in SOUNDFONTS if sf.is_file()), None)
    fluidsynth = shutil.which("fluidsynth")
    if soundfont is None or fluidsynth is None:
        raise SystemExit("bench_render: needs fluidsynth and a GM SoundFont (apt-get install fluidsynth fluid-soundfont-gm)")
    env = dict(os.environ)
    if args.note_source:
        env["MARS_SYNTH_NOTE_SOURCE"] = args.note_source
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), str(REPO / "tools"),
                                                          env.get("PYTHONPATH")]))  # fmt: skip
    if args.in_process:
        return in_process(files, args, soundfont, fluidsynth, env)
    # As installed: the package byte-compiled and the compiled files used.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "engine"), str(REPO / "mars_model")], check=True)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    ours = [sys.executable, "-m", "engine.bindings.cli", "render"]
    print(f"# bench_render: {args.repeats} repeats, medians; {args.sample_rate} Hz; FluidSynth with {soundfont.name}; "
          f"notes from {args.note_source or 'the shipped model'}; {os.cpu_count()} CPUs")
    header = (f"{'file':<16} {'audio s':>7} | {'fluidsynth s':>12} {'cpu s':>6} {'MiB':>4} | "
              f"{'cold s':>6} {'x RT':>5} {'cpu s':>6} {'MiB':>4} | {'warm s':>6} {'x RT':>5} {'cpu s':>6} {'MiB':>4} | "
              f"{'warm/fluid wall':>15} {'cpu':>5} | {'no fx: fluid s':>14} {'warm s':>6} {'wall':>5} {'cpu':>5}")  # fmt: skip
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp_name:
        tmp = Path(tmp_name)
        for midi in files:
            out = tmp / f"{midi.stem}.wav"
            fluid_base = [fluidsynth, "-ni", "-q", "-F", str(tmp / "fluid.wav"), "-r", str(args.sample_rate)]
            fluid, fluid_dry, cold, warm, warm_dry = [], [], [], [], []
            for i in range(args.repeats):  # interleaved, so a busy spell hurts every column alike
                fluid.append(timed_run(fluid_base + [str(soundfont), str(midi)]))
                fluid_dry.append(timed_run(fluid_base + ["-R", "0", "-C", "0", str(soundfont), str(midi)]))
                cache = tmp / f"cache-{midi.stem}-{0 if args.warm_only else i}"
                base = ours + [str(midi), "-o", str(out), "--sample-rate", str(args.sample_rate), "-q",
                               "--cache-dir", str(cache)]  # fmt: skip
                if not args.warm_only:
                    cold.append(timed_run(base, env))
                elif i == 0:
                    timed_run(base, env)  # fills the cache
                warm.append(timed_run(base, env))
                warm_dry.append(timed_run(base + ["--no-reverb", "--no-chorus"], env))
            seconds = soundfile.info(str(out)).duration

            def med(runs: list[tuple[float, float]], k: int) -> float:
                return statistics.median(r[k] for r in runs)

            if not cold:  # --warm-only
                cold = [(float("nan"), float("nan"), float("nan"))]
            f_s, c_s, w_s = med(fluid, 0), med(cold, 0), med(warm, 0)
            fd_s, wd_s = med(fluid_dry, 0), med(warm_dry, 0)
            print(f"{midi.name:<16} {seconds:7.2f} | {f_s:12.3f} {med(fluid, 1):6.3f} {med(fluid, 2):4.0f} | "
                  f"{c_s:6.3f} {seconds / c_s:5.1f} {med(cold, 1):6.3f} {med(cold, 2):4.0f} | "
                  f"{w_s:6.3f} {seconds / w_s:5.1f} {med(warm, 1):6.3f} {med(warm, 2):4.0f} | "
                  f"{w_s / f_s:15.2f} {med(warm, 1) / med(fluid, 1):5.2f} | "
                  f"{fd_s:14.3f} {wd_s:6.3f} {wd_s / fd_s:5.2f} {med(warm_dry, 1) / med(fluid_dry, 1):5.2f}")  # fmt: skip
    print("warm/fluid < 1: mars-synth with a warm cache is faster than FluidSynth (wall clock, and CPU time, which "
          "is steadier on a loaded machine); x RT = audio seconds per wall second; no fx: both with reverb and "
          "chorus off (the audio length is with effects: mars-synth's auto tail rings the reverb out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
