"""The evaluation classifier: pitch and instrument family from a log spectrogram, and its embeddings.

Every metric that needs "a network's view" of a note (PIS, IIS, PKID, IKID, the Fréchet
distance, classifier accuracies) reads it from this one small conv net, trained once on
the real training notes and shipped as ``mars_model/weights/eval_classifier.pt``.

Input pipeline (inside the model, so callers hand it the project's log spectrograms)::

    log spectrogram   [B, 512, 256]   normalised log-magnitude (``SpectralFrontEnd``)
    -> time average pool by 16           [B, 512, 16]    (256 ms frames)
    -> log-frequency projection          [B, 192, 16]    2 bands per semitone from MIDI 21
    -> conv trunk (4 x conv3x3/BN/ReLU/maxpool2)  [B, 64, 12, 1] -> flatten [B, 768]
    -> pitch embedding  [B, 128] -> pitch logits  [B, 128]  (MIDI 0..127)
    -> family embedding [B, 128] -> family logits [B, 11]   (NSynth family order)

The log-frequency axis makes a pitch change a shift along one axis, which convolutions
handle well; the flatten keeps the absolute position that pitch needs. Two embeddings,
one per head, give PKID (pitch features) and IKID (family features) their own spaces.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mars_model.errors import MarsError
from mars_model.spectral import log_frequency_filterbank

#: NSynth's instrument families, index = label.
FAMILIES = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet",
    "organ", "reed", "string", "synth_lead", "vocal",
)  # fmt: skip

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "eval_classifier.pt"


@dataclass(frozen=True)
class ClassifierConfig:
    """Sizes of the evaluation classifier.

    Args:
        n_bins: linear-frequency bins of the input spectrogram (512).
        n_frames: frames of the input spectrogram (256).
        sample_rate: audio rate the spectrogram was made at (Hz).
        n_fft: FFT size of the spectrogram (bin spacing ``sample_rate / n_fft``).
        time_pool: frames averaged into one (256 / 16 = 16 frames, 256 ms each).
        attack_frames: keep only the first this many frames (the attack) before pooling;
            ``None`` keeps them all.
        midi_low: MIDI pitch of the lowest log-frequency band centre.
        bands_per_semitone: log-frequency resolution.
        n_bands: number of log-frequency bands (192 = 8 octaves at 2 per semitone).
        channels: conv trunk widths, one max-pool(2) after each.
        embed_dim: width of each head's embedding (the KID/Fréchet feature space).
        n_pitches: pitch classes (MIDI 0..127).
        n_families: instrument families (NSynth's 11).
        dropout: dropout before each embedding.
    """

    n_bins: int = 512
    n_frames: int = 256
    sample_rate: int = 16000
    n_fft: int = 1024
    time_pool: int = 16
    attack_frames: int | None = None
    midi_low: float = 21.0
    bands_per_semitone: int = 2
    n_bands: int = 192
    channels: tuple[int, ...] = (16, 32, 64, 64)
    embed_dim: int = 128
    n_pitches: int = 128
    n_families: int = 11
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if self.attack_frames is not None and not 0 < self.attack_frames <= self.n_frames:
            raise ValueError(f"attack_frames must be in 1..n_frames ({self.n_frames}), got {self.attack_frames}")
        if self.frames_used % self.time_pool:
            raise ValueError(f"time_pool ({self.time_pool}) must divide the frames used ({self.frames_used})")
        down = 2 ** len(self.channels)
        if self.n_bands % down or (self.frames_used // self.time_pool) % down:
            raise ValueError(f"n_bands and pooled frames must be divisible by {down}")

    @property
    def frames_used(self) -> int:
        """Input frames the classifier reads: ``attack_frames``, or all ``n_frames``."""
        return self.attack_frames or self.n_frames

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(bands, frames)`` after the projection: the conv trunk's input."""
        return self.n_bands, self.frames_used // self.time_pool

    @property
    def flat_dim(self) -> int:
        down = 2 ** len(self.channels)
        bands, frames = self.input_shape
        return self.channels[-1] * (bands // down) * (frames // down)


def log_frequency_matrix(config: ClassifierConfig) -> torch.Tensor:
    """The classifier's ``[n_bands, n_bins]`` log-frequency filterbank (see
    :func:`mars_model.spectral.log_frequency_filterbank`)."""
    return log_frequency_filterbank(config.sample_rate, config.n_fft, config.n_bins, config.midi_low,
                                    config.bands_per_semitone, config.n_bands)  # fmt: skip


@dataclass
class ClassifierOutput:
    """What the classifier says about ``N`` notes (numpy, float32 except labels).

    Attributes:
        pitch_probs: ``[N, 128]`` softmax over MIDI pitches.
        family_probs: ``[N, 11]`` softmax over families.
        pitch_embedding: ``[N, D]`` the pitch head's features (PKID, pitch Fréchet),
            divided by their RMS over the training notes.
        family_embedding: ``[N, D]`` the family head's features (IKID, family Fréchet),
            scaled the same way.
        spectral_features: ``[N, 768]`` the log-frequency input pooled 2 x 2 (NDB bins).
    """

    pitch_probs: np.ndarray
    family_probs: np.ndarray
    pitch_embedding: np.ndarray
    family_embedding: np.ndarray
    spectral_features: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.pitch_probs)


@dataclass
class ClassifierHeads:
    """The classifier's heads for a batch of prepared inputs (torch, before any scaling).

    Attributes:
        pitch_logits: ``[B, 128]``.
        family_logits: ``[B, 11]``.
        pitch_embedding: ``[B, D]`` the pitch head's features.
        family_embedding: ``[B, D]`` the family head's features.
    """

    pitch_logits: torch.Tensor
    family_logits: torch.Tensor
    pitch_embedding: torch.Tensor
    family_embedding: torch.Tensor


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class NoteClassifier(nn.Module):
    """Pitch + family classifier with one embedding per head.

    Args:
        config: sizes (see :class:`ClassifierConfig`).
    """

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ClassifierConfig()
        self.info: dict = {}  # training facts stored with the weights (accuracies, data, time)
        self.register_buffer("projection", log_frequency_matrix(config), persistent=False)
        widths = (1, *config.channels)
        self.trunk = nn.Sequential(
            *(_conv_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        self.pitch_embed = nn.Sequential(
            nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(config.flat_dim, config.embed_dim),
            nn.ReLU(),
        )  # fmt: skip
        self.family_embed = nn.Sequential(
            nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(config.flat_dim, config.embed_dim),
            nn.ReLU(),
        )  # fmt: skip
        self.pitch_head = nn.Linear(config.embed_dim, config.n_pitches)
        self.family_head = nn.Linear(config.embed_dim, config.n_families)
        # RMS of the (pitch, family) embeddings over the training notes, set after training:
        # :meth:`describe` divides by it so real notes have |x|^2 / D ~ 1, the regime the
        # KID kernel (x.y / D + 1)^3 is meant for.
        self.register_buffer("embedding_scale", torch.ones(2))

    def prepare(self, spec: torch.Tensor) -> torch.Tensor:
        """Log spectrogram ``[B, F, T]`` (or ``[B, 1, F, T]``) -> trunk input ``[B, bands, frames]``
        (``T / time_pool``, or ``attack_frames / time_pool``)."""
        if spec.dim() == 4:
            spec = spec[:, 0]
        cfg = self.config
        if tuple(spec.shape[1:]) != (cfg.n_bins, cfg.n_frames):
            raise MarsError(
                f"the evaluation classifier expects [B, {cfg.n_bins}, {cfg.n_frames}] log "
                f"spectrograms, got {list(spec.shape)}"
            )
        spec = spec[..., : cfg.frames_used].float()
        pooled = spec.reshape(*spec.shape[:2], -1, cfg.time_pool).mean(dim=-1)  # [B, F, T']
        return torch.matmul(self.projection, pooled)  # [B, bands, T']

    def forward_prepared(self, x: torch.Tensor) -> ClassifierHeads:
        """Trunk input ``[B, bands, frames]`` -> logits and embeddings of both heads."""
        h = self.trunk(x[:, None])
        pitch_emb = self.pitch_embed(h)
        family_emb = self.family_embed(h)
        return ClassifierHeads(self.pitch_head(pitch_emb), self.family_head(family_emb), pitch_emb, family_emb)

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log spectrogram ``[B, F, T]`` -> (pitch logits ``[B, 128]``, family logits ``[B, 11]``)."""
        heads = self.forward_prepared(self.prepare(spec))
        return heads.pitch_logits, heads.family_logits

    @torch.no_grad()
    def describe(
        self,
        specs: np.ndarray | torch.Tensor,
        batch_size: int = 64,
        progress=None,
    ) -> ClassifierOutput:
        """Run the classifier over many notes (eval mode, no gradients).

        Args:
            specs: ``[N, F, T]`` log spectrograms (numpy memmap or tensor, any float dtype).
            batch_size: notes per forward pass.
            progress: optional callable receiving the number of notes done per batch.
        Returns:
            :class:`ClassifierOutput` with ``N`` rows.
        """
        was_training = self.training
        self.eval()
        device = self.projection.device
        outs: dict[str, list[np.ndarray]] = {k: [] for k in ("pp", "fp", "pe", "fe", "sf")}
        for start in range(0, len(specs), batch_size):
            chunk = specs[start : start + batch_size]
            batch = torch.as_tensor(np.asarray(chunk, dtype=np.float32)).to(device)
            x = self.prepare(batch)
            heads = self.forward_prepared(x)
            outs["pp"].append(heads.pitch_logits.softmax(-1).cpu().numpy())
            outs["fp"].append(heads.family_logits.softmax(-1).cpu().numpy())
            outs["pe"].append((heads.pitch_embedding / self.embedding_scale[0]).cpu().numpy())
            outs["fe"].append((heads.family_embedding / self.embedding_scale[1]).cpu().numpy())
            outs["sf"].append(nn.functional.avg_pool2d(x[:, None], 2).flatten(1).cpu().numpy())
            if progress:
                progress(len(batch))
        self.train(was_training)
        if not outs["pp"]:
            raise MarsError("no notes to classify")
        return ClassifierOutput(*(np.concatenate(outs[k]) for k in ("pp", "fp", "pe", "fe", "sf")))


@torch.no_grad()
def calibrate_embedding_scale(
    model: NoteClassifier, x: torch.Tensor, batch_size: int = 256
) -> None:
    """Set ``model.embedding_scale`` to the RMS of each embedding over trunk inputs ``x``.

    Args:
        x: ``[N, bands, frames]`` prepared inputs of real (training) notes.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        heads = model.forward_prepared(x[start : start + batch_size].float())
        sums += torch.stack([heads.pitch_embedding.double().pow(2).sum(), heads.family_embedding.double().pow(2).sum()])
    rms = (sums / (len(x) * model.config.embed_dim)).sqrt().clamp_min(1e-6)
    model.embedding_scale.copy_(rms.float())
    model.train(was_training)


def save_classifier(model: NoteClassifier, path: str | os.PathLike, info: dict) -> None:
    """Write ``model`` (config, weights, and a dict of training facts) to ``path``."""
    config = asdict(model.config)
    config["channels"] = list(config["channels"])
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"format": "mars-eval-classifier/1", "config": config, "state_dict": state,
                "info": info}, path)  # fmt: skip


def load_classifier(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> NoteClassifier:
    """Load a trained classifier (default: the shipped ``eval_classifier.pt``), in eval mode.

    Raises:
        MarsError: the file is missing or is not an evaluation classifier.
    """
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise MarsError(
            f"no evaluation classifier at {path}; train one with "
            "'python tools/train_eval_classifier.py DATA_DIR'"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise MarsError(f"cannot read the evaluation classifier {path}: {err}") from None
    if not isinstance(blob, dict) or blob.get("format") != "mars-eval-classifier/1":
        raise MarsError(f"{path} is not a mars-synth evaluation classifier")
    config = dict(blob["config"])
    config["channels"] = tuple(config["channels"])
    model = NoteClassifier(ClassifierConfig(**config))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise MarsError(f"{path}: weights do not match its config ({err})") from None
    model.info = blob.get("info", {})
    return model.to(device).eval()
