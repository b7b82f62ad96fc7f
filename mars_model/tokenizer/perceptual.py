"""A perceptual distance for training the tokenizer's decoder (LPIPS-style, on spectrograms).

L1/L2 regression of a spectrogram from a lossy code pays for uncertainty by averaging:
harmonics come out a little wide and the noise floor a little flat. Measured on real
notes, blurring by 4 frequency bins is enough to drop the evaluation classifier's family
accuracy from 97 % to 68 % (README, "Tokenizer"), so that blur is exactly what costs the
reconstructions their timbre. A perceptual distance compares notes where a network that
knows instruments looks: the activations of each block of a frozen classifier, each
channel vector unit-normalised per position (as LPIPS does), compared by squared error.

**Not the evaluation classifier.** The network here is a separate one: another input view
(4 log-frequency bands per semitone and 128 ms frames, against 2 and 256 ms), five
conv blocks instead of four, other widths, and it learns the GM *program* (96 classes
here) and the pitch, not the family. It is trained once on the train split
(``python tools/train_perceptual_net.py data/fluidr3``) and shipped as
``mars_model/weights/tokenizer_perceptual.pt`` so the decoder fine-tune that uses it can
be rerun. The evaluation classifier is never seen by any training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mars_model.errors import MarsError
from mars_model.eval.classifier import ClassifierConfig, NoteClassifier, load_classifier

DEFAULT_PERCEPTUAL_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "tokenizer_perceptual.pt"

#: The perceptual network's sizes (see the module docstring for how it differs from the
#: evaluation classifier). 384 bands from MIDI 21 reach 6.6 kHz; the trunk pools
#: [384, 32] down to [12, 1].
PERCEPTUAL_CONFIG = ClassifierConfig(
    time_pool=8,
    bands_per_semitone=4,
    n_bands=384,
    channels=(16, 32, 48, 64, 64),
    embed_dim=128,
    n_families=128,  # the second head learns the GM program
    dropout=0.3,
)


class PerceptualDistance(nn.Module):
    """``d(recon, target)``: the squared difference of channel-normalised activations,
    averaged over the trunk's five blocks, plus the same averaged over its two embeddings.
    The blocks compare local spectral shape; the embeddings compare what the network makes
    of the whole note (its pitch and its instrument), an identity term like those of face
    reconstruction. Frozen, always in eval mode; gradients flow to ``recon``.

    Args:
        net: a trained :class:`NoteClassifier` (by default the shipped perceptual network).
    """

    def __init__(self, net: NoteClassifier) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualDistance:
        super().train(mode)
        self.net.eval()  # batch-norm statistics stay those of the real training notes
        return self

    def features(self, spec: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised activations: after each trunk block ``[B, C_l, H_l, W_l]``, then the
        pitch and the program embeddings ``[B, D, 1, 1]``."""
        h = self.net.prepare(spec)[:, None]
        out = []
        for block in self.net.trunk:
            h = block(h)
            out.append(h)
        out += [self.net.pitch_embed(h)[..., None, None], self.net.family_embed(h)[..., None, None]]
        return [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-6) for f in out]

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            want = self.features(target)
        got = self.features(recon)
        terms = torch.stack([(a - b).pow(2).sum(dim=1).mean() for a, b in zip(got, want, strict=True)])
        return terms[:-2].mean() + terms[-2:].mean()  # local shape + identity, equal halves


def load_perceptual(path: str | Path | None = None) -> PerceptualDistance:
    """The perceptual distance with the network at ``path`` (default: the shipped one)."""
    path = Path(path or DEFAULT_PERCEPTUAL_WEIGHTS)
    if not path.is_file():
        raise MarsError(f"no perceptual network at {path}; train one with "
                        "'python tools/train_perceptual_net.py DATA_DIR -o PATH'")  # fmt: skip
    return PerceptualDistance(load_classifier(path))
