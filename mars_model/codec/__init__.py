"""EuleroDec: a complex-valued residual-VQ audio codec at 6 and 12 kbps, trained without GAN or diffusion."""

from mars_model.codec.config import KBPS_CHOICES, CodecConfig
from mars_model.codec.model import (
    CodecModel,
    CodecOutput,
    build_codec,
    eulerodec_16khz,
    real_rvqvae_16khz,
)

__all__ = [
    "KBPS_CHOICES",
    "CodecConfig",
    "CodecModel",
    "CodecOutput",
    "build_codec",
    "eulerodec_16khz",
    "real_rvqvae_16khz",
]
