"""Spectral and waveform losses of the codec, and the same distances as evaluation metrics.

No adversarial or diffusion terms: the training loss is a weighted sum of

* ``mrstft``: multi-resolution STFT distance (spectral convergence + log-magnitude L1,
  averaged over FFT sizes 128, 256, 512, 1024 with hop = size / 4);
* ``mel``: L1 between log mel spectrograms (80 bands, FFT 1024, hop 256);
* ``complex``: mean squared error between the compressed complex spectra (the only term
  that sees phase directly);
* ``wave``: L1 between waveforms;
* ``commit``: the VQ commitment loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

MRSTFT_SIZES = (128, 256, 512, 1024)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:  # fmt: skip
    """HTK-scale triangular mel filters ``[n_mels, n_fft // 2 + 1]`` (unit peak)."""
    f_max = f_max or sample_rate / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def _magnitude(wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=wav.device)
    spec = torch.stft(wav, n_fft, hop, window=window, center=True, return_complex=True)
    return torch.sqrt(spec.real**2 + spec.imag**2 + 1e-10)


def mrstft_distance(
    ref: torch.Tensor, est: torch.Tensor, sizes: Sequence[int] = MRSTFT_SIZES
) -> torch.Tensor:
    """Multi-resolution STFT distance ``[B, L]`` x ``[B, L]`` -> scalar.

    Per size: ``||S - S'||_F / ||S||_F + mean|log S - log S'|`` (magnitudes); averaged over sizes.
    """
    total = 0.0
    for n_fft in sizes:
        a, b = _magnitude(ref, n_fft, n_fft // 4), _magnitude(est, n_fft, n_fft // 4)
        sc = torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a).clamp_min(1e-7)
        total = total + sc + (torch.log(a) - torch.log(b)).abs().mean()
    return total / len(sizes)


class MelDistance(torch.nn.Module):
    """L1 between natural-log mel magnitudes (80 bands, FFT 1024, hop 256, floor 1e-5): ``[B, L]`` x2 -> scalar."""

    def __init__(
        self, sample_rate: int = 16000, n_fft: int = 1024, hop: int = 256, n_mels: int = 80
    ) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("filters", torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels)),
                             persistent=False)  # fmt: skip

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> ``[B, n_mels, T]``."""
        return torch.log(
            torch.matmul(self.filters, _magnitude(wav, self.n_fft, self.hop)).clamp_min(1e-5)
        )

    def forward(self, ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        return (self.log_mel(ref) - self.log_mel(est)).abs().mean()


def si_sdr(ref: torch.Tensor, est: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per item: ``[B, L]`` x2 -> ``[B]`` (means removed first)."""
    ref = ref - ref.mean(-1, keepdim=True)
    est = est - est.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


class CodecLoss:
    """``(model, batch, step) -> (loss, metrics)`` for :func:`mars_model.training.train`.

    Args:
        weights: ``mrstft``, ``mel``, ``complex``, ``wave``, ``commit`` (defaults 1, 1, 1, 0.1, 1).
        n_q_choices: RVQ stages drawn per step (seeded by the step), so one model learns
            every rate it will serve.
        seed: seed of that draw.
    """

    DEFAULTS = {"mrstft": 1.0, "mel": 1.0, "complex": 1.0, "wave": 0.1, "commit": 1.0}

    def __init__(self, weights: Mapping[str, float], n_q_choices: Sequence[int], sample_rate: int,
                 seed: int = 0) -> None:  # fmt: skip
        unknown = set(weights) - set(self.DEFAULTS)
        if unknown:
            from mars_model.errors import MarsError

            raise MarsError(
                f"loss: unknown term(s) {sorted(unknown)}; allowed: {sorted(self.DEFAULTS)}"
            )
        self.weights = {**self.DEFAULTS, **{k: float(v) for k, v in weights.items()}}
        self.n_q_choices, self.seed = tuple(n_q_choices), seed
        self.mel = MelDistance(sample_rate)

    def __call__(self, model, batch, step):
        wav = batch["wav"]
        n_q = self.n_q_choices[
            int(np.random.default_rng([self.seed, step]).integers(len(self.n_q_choices)))
        ]
        out = model(wav, n_q)
        self.mel.to(wav.device)
        terms = {
            "mrstft": mrstft_distance(wav, out.recon),
            "mel": self.mel(wav, out.recon),
            "complex": (out.spec - out.spec_hat).abs().pow(2).mean(),
            "wave": (wav - out.recon).abs().mean(),
            "commit": out.commit,
        }
        loss = sum(self.weights[k] * v for k, v in terms.items())
        inner = model.module if hasattr(model, "module") else model
        metrics = {k: float(v.detach()) for k, v in terms.items()}
        metrics["codes"] = float(inner.quantizer.usage_fraction()[:n_q].mean())
        metrics["n_q"] = n_q
        return loss, metrics
