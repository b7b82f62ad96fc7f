"""The shared multi-scale tokenizer: a conv VQ-VAE over the CMX spectrogram image."""

from mars_model.tokenizer.model import Tokenizer, TokenizerConfig, build_tokenizer
from mars_model.tokenizer.quantizer import MultiScaleResidualVQ

__all__ = ["MultiScaleResidualVQ", "Tokenizer", "TokenizerConfig", "build_tokenizer"]
