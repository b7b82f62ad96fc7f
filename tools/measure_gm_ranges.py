"""Measure which keys of a General MIDI SoundFont are usable: melodic ranges and kit keys.

Melodic programs (bank 0): every key 0-127 is rendered at one velocity with the note set's
protocol (4 s, held 3 s, 16 kHz). A key *sounds* when its peak reaches -60 dBFS (the
builder's silence floor); its pitch *follows the key* when pYIN (``mars_model.eval.pitch``,
octaves forgiven) finds the key's pitch class within 50 cents. A program is *pitched* when
most of its sounding keys in A0..C8 follow (checked on every third key from 12 to 117); its
measured range is then the longest run of following keys (one missed grid key bridged, as pYIN
misses a note now and then), extended key by key at both ends, else the run of sounding keys.

Kits (bank 128): every key 0-127 is struck with the key held and left to ring for 12 s at
velocity 127; the tool reports which keys sound, how long each rings above -60 dBFS, how much
letting the key up after 0.1 s changes the first 4 s (FluidSynth honours note-off on drums,
so a zone with a short release is cut), and which keys sound different from the kit they fall
back to (a variation such as Standard 1: its base kit; a base kit such as Room: Standard),
comparing the first second of the renders sample by sample.

Writes a JSON report (25 min on two busy cores for FluidR3_GM); ``--print-yaml`` turns
one into the lines of ``mars_model/data/gm_families.yaml``::

    nice -n 19 python tools/measure_gm_ranges.py --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 \\
        --out tools/measurements/gm_ranges_fluidr3.json --workers 2
    python tools/measure_gm_ranges.py --print-yaml tools/measurements/gm_ranges_fluidr3.json
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from mars_model.data.build import (
    SAMPLE_RATE,
    SILENCE_PEAK_DBFS,
    NoteProtocol,
    render_notes,
)
from mars_model.data.soundfont import PERCUSSION_BANK, SoundFontIndex

KEYS = range(128)
MELODIC_VELOCITY = 100
KIT_VELOCITY = 127
RING = NoteProtocol(hold_s=12.0, note_s=12.0, slot_s=12.5)  # key held: the drum's own decay
RELEASED = NoteProtocol(hold_s=0.1, note_s=12.0, slot_s=12.5)  # key up at once
KEYBOARD = (21, 108)  # A0..C8
GRID_STEP = 3
PYIN_KEYS = (12, 117)


def peak_dbfs(waves: np.ndarray) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(np.abs(waves).max(axis=-1), 1e-12))


def runs(keys: list[int], max_gap: int = 0) -> list[tuple[int, int]]:
    """Inclusive runs of ``keys``; keys at most ``max_gap`` apart join one run."""
    out: list[tuple[int, int]] = []
    for k in sorted(keys):
        if out and k - out[-1][1] <= max_gap + 1:
            out[-1] = (out[-1][0], k)
        else:
            out.append((k, k))
    return out


def longest(spans: list[tuple[int, int]]) -> tuple[int, int] | None:
    return max(spans, key=lambda s: (s[1] - s[0], -s[0])) if spans else None


def measure_program(soundfont: Path, program: int) -> dict:
    from mars_model.eval.pitch import estimate_pitch

    waves = np.concatenate([
        render_notes(soundfont, program, [(k, MELODIC_VELOCITY) for k in KEYS[i : i + 64]])
        for i in (0, 64)
    ])  # fmt: skip
    peaks = peak_dbfs(waves)
    sounding = [k for k in KEYS if peaks[k] >= SILENCE_PEAK_DBFS]
    measurable = {k for k in sounding if PYIN_KEYS[0] <= k <= PYIN_KEYS[1]}
    cents: dict[int, float | None] = {}

    def follows(k: int) -> bool:
        if k not in measurable:
            return False
        if k not in cents:
            # Below key 24 pYIN's frame grows past 0.5 s (two periods of the lowest f0 searched).
            est = estimate_pitch(waves[k], k, SAMPLE_RATE, start_s=0.1,
                                 duration_s=1.0 if k < 24 else 0.5)  # fmt: skip
            off = est.cents_off  # octaves forgiven: pYIN and the timpani disagree about them
            cents[k] = None if not np.isfinite(off) else round(float((off + 600) % 1200 - 600), 1)
        return cents[k] is not None and abs(cents[k]) <= 50.0

    # pYIN costs about 0.3 s a note here, so it runs on every third key, then key by key
    # outwards from the ends of the run it found.
    grid = [k for k in range(PYIN_KEYS[0], PYIN_KEYS[1] + 1, GRID_STEP) if k in measurable]
    following = [k for k in grid if follows(k)]
    on_keyboard = [k for k in grid if KEYBOARD[0] <= k <= KEYBOARD[1]]
    pitched = bool(on_keyboard) and sum(follows(k) for k in on_keyboard) > 0.5 * len(on_keyboard)
    if pitched:
        lo, hi = longest(runs(following, max_gap=2 * GRID_STEP - 1))  # one missed grid key
        while follows(lo - 1):
            lo -= 1
        while follows(hi + 1):
            hi += 1
        span: tuple[int, int] | None = (lo, hi)
    else:
        span = longest(runs(sounding))
    return {
        "program": program,
        "peak_dbfs": [round(float(p), 1) for p in peaks],
        "sounding": runs(sounding),
        "cents": dict(sorted(cents.items())),
        "pitched": pitched,
        "measured": span,
    }


def measure_kit(soundfont: Path, kit: int, released: bool) -> dict:
    bank = PERCUSSION_BANK
    waves = np.concatenate([
        render_notes(soundfont, kit, [(k, KIT_VELOCITY) for k in KEYS[i : i + 32]], bank=bank,
                     protocol=RING)
        for i in range(0, 128, 32)
    ])  # fmt: skip
    peaks = peak_dbfs(waves)
    sounding = [k for k in KEYS if peaks[k] >= SILENCE_PEAK_DBFS]
    floor = 10.0 ** (SILENCE_PEAK_DBFS / 20.0)
    ring_s = {}
    for k in sounding:
        loud = np.flatnonzero(np.abs(waves[k]) >= floor)
        ring_s[k] = round(float((loud[-1] + 1) / SAMPLE_RATE), 2)
    result = {"kit": kit, "sounding": sounding, "ring_s": ring_s,
              "peak_dbfs": {k: round(float(peaks[k]), 1) for k in sounding}}  # fmt: skip
    if released:
        released_waves = render_notes(soundfont, kit, [(k, KIT_VELOCITY) for k in sounding],
                                      bank=bank, protocol=RELEASED)  # fmt: skip
        first = 4 * SAMPLE_RATE
        changed = {}
        for i, k in enumerate(sounding):
            a, b = waves[k, :first], released_waves[i, :first]
            diff = 10 * np.log10(np.sum((a - b) ** 2) / max(np.sum(a**2), 1e-20) + 1e-20)
            if diff > -40.0:  # the released note differs by more than 0.01 % of the energy
                changed[k] = round(float(diff), 1)
        result["release_changes_db"] = changed
    # The first second is enough to tell two kits' samples apart; kept for the comparison of
    # variation kits with their base, dropped before writing.
    result["_onsets"] = waves[:, :SAMPLE_RATE].copy()
    return result


BASE_KITS = (0, 8, 16, 24, 25, 32, 40, 48, 56)


def base_kit(kit: int, kits: list[int]) -> int:
    """The GS kit a variation (Standard 1 = 1, Room 3 = 11 ...) belongs to: the base below it."""
    return max(b for b in BASE_KITS if b <= kit and b in kits)


def fallback_kit(kit: int, kits: list[int]) -> int | None:
    """The kit whose sound a key falls back to: a variation's base kit, a base kit's Standard."""
    base = base_kit(kit, kits)
    if base != kit:
        return base
    return None if kit == 0 or 0 not in kits else 0


def key_list(keys: list[int]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs(keys))


def print_yaml(report: dict) -> None:
    """The measured ranges and kit keys as the lines of ``gm_families.yaml`` use them.

    A melodic program's range is its measured range cut to the 88 keys A0..C8 (below A0 the
    fundamental falls within two bins of the 16 kHz front end; above C8 fewer than two
    harmonics fit under 8 kHz). Family and source are not measured: they come from the map.
    """
    from mars_model.data.gm_map import FamilyMap

    family_map = FamilyMap.load()
    index = SoundFontIndex.load(report["soundfont"])
    print("# programs: measured range -> range in A0..C8; the map's range where it differs")
    for p, r in sorted(report["programs"].items(), key=lambda kv: int(kv[0])):
        p = int(p)
        lo, hi = r["measured"]
        cut = (max(lo, KEYBOARD[0]), min(hi, KEYBOARD[1]))
        info = family_map.programs.get(p)
        mapped = info.pitch_range if info else None
        sounding = {k for a, b in r["sounding"] for k in range(a, b + 1)}
        note = ""
        if mapped and mapped != cut:
            silent = [k for k in range(mapped[0], mapped[1] + 1) if k not in sounding]
            off = [k for k in range(mapped[0], mapped[1] + 1)
                   if r["cents"].get(str(k), 0) is None or abs(r["cents"].get(str(k)) or 0) > 50]  # fmt: skip
            note = f"  map {list(mapped)}: silent {key_list(silent) or '-'}, pitch off {key_list(off) or '-'}"
        kind = "pitched" if r["pitched"] else "unpitched"
        print(f"#   {p:3d} {index.name(0, p)[:20]:20s} {kind:9s} measured {lo}-{hi} -> "
              f"[{cut[0]}, {cut[1]}]{note}")  # fmt: skip
    print("kits:")
    for k, r in sorted(report["kits"].items(), key=lambda kv: int(kv[0])):
        k = int(k)
        fallback = r.get("fallback")
        own = r.get("differs_from_fallback", r["sounding"])
        tail = f", fallback: {fallback}, own: \"{key_list(own)}\"" if fallback is not None else ""
        print(f"  - {{program: {k}, name: {index.name(PERCUSSION_BANK, k)}, "
              f"keys: \"{key_list(r['sounding'])}\"{tail}}}")  # fmt: skip
        longest_ring = sorted(r["ring_s"].items(), key=lambda kv: -kv[1])[:3]
        print(f"    # rings longest (s, key held, above -60 dBFS): {longest_ring}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soundfont", type=Path, default=Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"))
    parser.add_argument("--out", type=Path, help="JSON report to write")
    parser.add_argument("--print-yaml", type=Path, metavar="JSON",
                        help="print a report's ranges and kit keys as family-map lines; measure nothing")
    parser.add_argument("--programs", default="0-127", help="melodic programs, e.g. 0-127, 88,95 or none")
    parser.add_argument("--kits", default="all", help="kit programs, 'all' or 'none'")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.print_yaml:
        print_yaml(json.loads(args.print_yaml.read_text()))
        return 0
    if args.out is None:
        parser.error("--out is required to measure")

    from mars_model.data.build import parse_int_list

    index = SoundFontIndex.load(args.soundfont)
    programs = ([] if args.programs == "none" else
                [p for p in parse_int_list(args.programs, "--programs", 0, 127) if index.has(0, p)])  # fmt: skip
    all_kits = list(index.programs(PERCUSSION_BANK))
    kits = (all_kits if args.kits == "all" else []
            if args.kits == "none" else list(parse_int_list(args.kits, "--kits", 0, 127)))  # fmt: skip
    report: dict = {"soundfont": str(args.soundfont), "melodic_velocity": MELODIC_VELOCITY,
                    "kit_velocity": KIT_VELOCITY, "keyboard": KEYBOARD, "programs": {}, "kits": {}}  # fmt: skip
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        jobs = {p: pool.submit(measure_program, args.soundfont, p) for p in programs}
        kit_jobs = {k: pool.submit(measure_kit, args.soundfont, k, base_kit(k, all_kits) == k)
                    for k in kits}  # fmt: skip
        for p, job in jobs.items():
            r = job.result()
            report["programs"][p] = r
            print(f"program {p:3d} {index.name(0, p)[:20]:20s} sounding {r['sounding']} "
                  f"{'pitched' if r['pitched'] else 'unpitched'} measured {r['measured']}",
                  file=sys.stderr, flush=True)  # fmt: skip
        kit_results = {k: job.result() for k, job in kit_jobs.items()}
    for k, r in kit_results.items():
        fallback = fallback_kit(k, all_kits)
        if fallback is not None and fallback in kit_results:
            fw = kit_results[fallback]["_onsets"]
            r["fallback"] = fallback
            r["differs_from_fallback"] = [
                key for key in r["sounding"]
                if key not in kit_results[fallback]["sounding"]
                or np.max(np.abs(r["_onsets"][key] - fw[key])) > 1e-4
            ]  # fmt: skip
        rings = sorted(r["ring_s"].items(), key=lambda kv: -kv[1])[:5]
        print(f"kit {k:3d} {index.name(PERCUSSION_BANK, k)[:16]:16s} keys {runs(r['sounding'])} "
              f"longest {rings} release-changes {r.get('release_changes_db')} "
              f"differs-from-{r.get('fallback')} {r.get('differs_from_fallback')}", file=sys.stderr, flush=True)  # fmt: skip
    for r in kit_results.values():
        del r["_onsets"]
    report["kits"] = kit_results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
