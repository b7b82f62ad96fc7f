"""Export the drum-kit table the engine plays channel 10 with: writes engine/data/drum_kits.json.

The engine must find, without the note set, which generated note plays a key of a kit: the
note set renders each kit only on its *own* keys (where it sounds different from its
fallback kit) and its manifest's ``kit_map`` says where every other key's note is. This tool
copies that map, and adds what the engine needs besides:

* the drum key names and exclusive classes of ``mars_model/data/gm_drum_keys.yaml`` (a kit
  that lists its own classes, the Orchestra kit, keeps them);
* which keys honour note-off: from ``tools/measure_gm_ranges.py``'s report, the keys of each
  measured kit where letting the key up after 0.1 s changes more than -15 dB of the first
  4 s's energy (FluidSynth releases those zones; every other drum is a one-shot);
* which kits are base kits (Standard, Room, Power, ...) rather than variations of one
  (Standard 1, Room 3, ...): an unknown kit number plays the nearest base kit below it.

    python tools/export_kit_map.py --manifest /work/data/gm/manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mars_model.data.gm_map import DrumKeyMap

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "engine" / "data" / "drum_kits.json"
RANGES = ROOT / "tools" / "measurements" / "gm_ranges_fluidr3.json"
#: A key honours note-off when releasing it early changes more than this share of its energy.
NOTE_OFF_CHANGE_DB = -15.0


def is_variation(kit: dict, kits: dict[int, dict]) -> bool:
    """Whether a kit is a variation of its fallback kit (``Standard 1`` of ``Standard``)."""
    fallback = kit["fallback"]
    return fallback is not None and kit["name"].startswith(kits[fallback]["name"] + " ")


def classes_by_name(keys: DrumKeyMap, kit: int | None) -> dict[str, list[int]]:
    """Exclusive classes as ``{name: [keys]}``: the kit's own table, or the standard one (``None``)."""
    table = keys.classes if kit is None else keys.kit_classes[kit]
    out: dict[str, list[int]] = {}
    for key, name in sorted(table.items()):
        out.setdefault(name, []).append(key)
    return out


def build_table(manifest: dict, ranges: dict, keys: DrumKeyMap) -> dict:
    """The engine's kit table from a note set's manifest, the kit measurements and the key names."""
    kits = {int(k): v for k, v in manifest["kit_map"].items()}
    if not kits:
        raise SystemExit("the manifest's kit_map is empty: build the note set with --programs all")
    measured = ranges.get("kits", {})
    out_kits: dict[str, dict] = {}
    for program, kit in sorted(kits.items()):
        entry: dict = {"name": kit["name"], "base": not is_variation(kit, kits), "keys": kit["keys"],
                       "own_keys": kit["own_keys"], "fallback": kit["fallback"]}  # fmt: skip
        changes = measured.get(str(program), {}).get("release_changes_db")
        if changes is not None:
            entry["note_off_keys"] = sorted(int(k) for k, db in changes.items() if db > NOTE_OFF_CHANGE_DB)
        if program in keys.kit_classes:
            entry["exclusive_classes"] = classes_by_name(keys, program)
        if program in keys.kit_names:
            entry["names"] = {str(k): v for k, v in sorted(keys.kit_names[program].items())}
        out_kits[str(program)] = entry
    if "note_off_keys" not in out_kits.get("0", {}):
        raise SystemExit("the measurements have no note-off changes for the Standard kit; run "
                         "tools/measure_gm_ranges.py with kits")  # fmt: skip
    return {
        "source": f"tools/export_kit_map.py from {Path(manifest['soundfont']).name}'s note set manifest, "
                  f"{RANGES.name} and gm_drum_keys.yaml",
        "names": {str(k): v for k, v in sorted(keys.names.items())},
        "exclusive_classes": classes_by_name(keys, None),
        "kits": out_kits,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True, help="manifest.json of a note set built with kits")
    parser.add_argument("--ranges", type=Path, default=RANGES, help="tools/measure_gm_ranges.py's report")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    table = build_table(json.loads(args.manifest.read_text()), json.loads(args.ranges.read_text()), DrumKeyMap.load())
    text = json.dumps(table, indent=None, separators=(",", ":"))
    # One kit per line: small, and a diff shows which kit changed.
    text = text.replace(',"kits":{', ',\n"kits":{\n').replace('},"', '},\n"')
    args.output.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.output}: {len(table['kits'])} kits, {len(text)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
