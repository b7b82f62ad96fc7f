"""mars_model: the models behind mars-synth (spectral front end, CMX, tokenizer, autoregressor, codec)."""

from mars_model.errors import MarsError

__all__ = ["MarsError"]
__version__ = "0.1.0"
