"""The next-scale autoregressor: a transformer that predicts each token map from the coarser ones."""

from mars_model.autoregressor.model import ARConfig, NextScaleTransformer, build_autoregressor

__all__ = ["ARConfig", "NextScaleTransformer", "build_autoregressor"]
