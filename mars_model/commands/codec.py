"""``mars-synth codec encode|decode``: EuleroDec audio coding at 6 or 12 kbps to and from ``.mcodec`` files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Encode audio with EuleroDec (a complex-valued RVQ-VAE, 16 kHz) to a compact .mcodec file, "
        "or decode one back to WAV. Any input rate is resampled to 16 kHz; stereo is downmixed to "
        "mono; the decoded file has the input's rate and length."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    enc = actions.add_parser(
        "encode", help="audio file -> .mcodec", description="Encode an audio file."
    )
    enc.add_argument("input", type=Path, help="WAV, FLAC or OGG file (any rate, mono or stereo)")
    enc.add_argument("-o", "--output", type=Path, required=True, help="the .mcodec file to write")
    enc.add_argument("--kbps", type=int, choices=(6, 12), default=6, help="bit rate (default 6)")
    dec = actions.add_parser("decode", help=".mcodec -> WAV", description="Decode a .mcodec file.")
    dec.add_argument("input", type=Path, help="a .mcodec file written by 'mars-synth codec encode'")
    dec.add_argument("-o", "--output", type=Path, required=True, help="the WAV file to write")
    for sub in (enc, dec):
        sub.add_argument(
            "--weights", type=Path, help="codec weight file (default: the shipped EuleroDec)"
        )
        sub.add_argument(
            "--threads", type=int, default=0, help="CPU threads for torch (default 0: torch's choice)"
        )


def run(args: argparse.Namespace) -> int:
    import torch

    from mars_model.codec import bitstream
    from mars_model.codec.coding import decode_audio, encode_audio, read_audio
    from mars_model.errors import MarsError
    from mars_model.weights_io import SHIPPED, file_hash, load_codec, shipped_path

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = args.weights or shipped_path(SHIPPED["codec"])
    if args.action == "encode":
        audio, rate = read_audio(args.input)
        model = load_codec(weights)
        encoded = encode_audio(model, audio, rate, args.kbps, model_id=file_hash(weights)[:8])
        data = bitstream.to_bytes(encoded)
        _write(args.output, data)
        seconds = len(audio) / rate if rate else 0.0
        rate_text = f", {len(data) * 8 / seconds / 1000:.2f} kbps" if seconds else ""
        print(f"mars-synth codec: wrote {args.output}: {len(data)} bytes, {seconds:.2f} s{rate_text}",
              file=sys.stderr)
        return 0
    try:
        data = args.input.read_bytes()
    except OSError as err:
        raise MarsError(f"cannot read {args.input}: {err.strerror}") from None
    encoded = bitstream.from_bytes(data, str(args.input))
    model = load_codec(weights)
    model_id = file_hash(weights)[:8]
    if encoded.model_id != model_id:
        raise MarsError(f"{args.input} was encoded with codec model {encoded.model_id}, "
                        f"these weights are {model_id}; decode with the same --weights")  # fmt: skip
    wave, rate = decode_audio(model, encoded)
    import soundfile

    try:
        soundfile.write(str(args.output), wave, rate, subtype="PCM_16")
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise MarsError(f"cannot write {args.output}: {str(err).splitlines()[0]}") from None
    print(f"mars-synth codec: wrote {args.output}: {len(wave) / rate:.2f} s at {rate} Hz", file=sys.stderr)
    return 0


def _write(path: Path, data: bytes) -> None:
    from mars_model.errors import MarsError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise MarsError(f"cannot write {path}: {err.strerror}") from None
