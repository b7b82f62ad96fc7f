"""NoteGenerator: conditions in, waveforms out — the MARS model as the engine sees it.

Pipeline per batch of :class:`~mars_model.api.NoteRequest`::

    condition (instrument mix, pitch, velocity bucket)
      -> autoregressor, scale 1 .. K (KV cache; classifier-free guidance; seeded sampling)
      -> tokenizer decoder -> inverse CMX -> log-spectrogram [B, 1, 512, 256]
      -> magnitude -> vocoder (Griffin-Lim) -> waveform [B, 64000] at 16 kHz

"Cached coarse scales": the first ``coarse_scales`` scales are drawn from a random
generator seeded by the condition alone (instrument mix, pitch, velocity bucket,
sampling settings), the fine scales from the request's own seed. So every note of a
condition shares its coarse structure, and the coarse tokens, running latent and KV
cache are computed once per condition and reused: a new note (a new seed) only refines
the fine scales. Draws use generators per request, so a note's audio depends on its own
condition and seed, never on what it was batched with, and is the same with the cache on
or off.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mars_model.api import NoteRequest, model_id, velocity_bucket
from mars_model.autoregressor.model import NextScaleTransformer
from mars_model.errors import MarsError
from mars_model.spectral import SpectralFrontEnd
from mars_model.tokenizer.model import Tokenizer
from mars_model.weights_io import load_autoregressor, load_tokenizer, shipped_path

BACKENDS = ("eager", "compile", "cuda-graphs", "tensorrt")
#: Notes decoded per tokenizer-decoder call and vocoded per Griffin-Lim call: at 16 notes their
#: activations and STFT buffers took 125 and 290 MB; in chunks, the notes are the same (the
#: layers are batch-invariant). With two workers, chunks of 4 keep a cold render of the dense
#: example under 600 MB (613 MB with decoder chunks of 8).
DECODER_CHUNK = 4
VOCODER_CHUNK = 4
DEFAULT_TOKENIZER = "tokenizer.pt"
DEFAULT_AUTOREGRESSOR = "autoregressor.pt"


PRECISIONS = ("auto", "fp32", "bf16")


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for ``device`` (see :class:`NoteGenerator`)."""
    if precision not in PRECISIONS:
        raise MarsError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and _cpu_has_native_bf16() else "fp32"


#: How many of the most likely tokens :func:`filter_logits` looks at first. The shipped model's
#: nucleus (top-p 0.95) holds a median of 15 tokens and 84 at the 90th percentile; rows whose
#: nucleus is wider are looked at again with the whole vocabulary.
NUCLEUS_CANDIDATES = 96


def largest(logits: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` largest values of each row, largest first. ``[R, V]`` -> ``[R, n]``.

    On the CPU this is NumPy's partition and sort (SIMD sorting networks), about 8x faster
    here than ``torch.topk`` or ``torch.sort`` over a 1024-token vocabulary.
    """
    if logits.device.type != "cpu":
        return logits.topk(n, dim=-1).values
    negated = -logits.detach().numpy()
    if n < negated.shape[-1]:
        negated = np.partition(negated, n - 1, axis=-1)[:, :n]
    return torch.from_numpy(-np.sort(negated, axis=-1))


def _cutoffs(logits: torch.Tensor, k: torch.Tensor, top_p: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's smallest kept logit from its ``n`` largest, and whether ``n`` were enough.
    ``[R, V]``, ``[R, 1]``, ``[R, 1]`` -> ``[R, 1]``, ``[R]``."""
    vocab = logits.shape[-1]
    best = largest(logits, n).masked_fill(torch.arange(n, device=logits.device) >= k, float("-inf"))
    kth = torch.where(k < vocab, best.gather(-1, (k - 1).clamp(max=n - 1)), float("-inf"))
    probs = (best - logits.masked_fill(logits < kth, float("-inf")).logsumexp(-1, keepdim=True)).exp()
    kept = (probs.cumsum(-1) - probs <= top_p) & best.isfinite()
    use_p = top_p < 1
    count = torch.where(use_p, kept.sum(-1, keepdim=True), k.clamp(max=n))
    cutoff = torch.where(use_p | (k < vocab), best.gather(-1, count - 1), float("-inf"))
    enough = ~(use_p & kept[:, -1:] & (k > n))[:, 0] | (n == vocab)
    return cutoff, enough


def filter_logits(logits: torch.Tensor, top_k: int | torch.Tensor, top_p: float | torch.Tensor) -> torch.Tensor:
    """Mask logits outside the top-k / nucleus top-p set with -inf. ``[..., V]`` -> same shape.

    ``top_k`` (0 = all) and ``top_p`` (1 = off) are numbers, or tensors broadcastable to
    ``[..., 1]`` that give every row its own setting, so a whole batch is filtered at once.
    The nucleus is the most likely tokens up to and including the one whose cumulative
    probability (after top-k) crosses ``top_p``; tokens tied with the last one kept are kept.
    It is found among each row's :data:`NUCLEUS_CANDIDATES` most likely tokens, and among all
    of them for the rows whose nucleus is wider, never by sorting every row in full.
    """
    vocab = logits.shape[-1]
    rows = logits.reshape(-1, vocab)
    k = torch.as_tensor(top_k, device=logits.device).expand(*logits.shape[:-1], 1).reshape(-1, 1)
    k = torch.where((k > 0) & (k < vocab), k, vocab)
    top_p = torch.as_tensor(top_p, dtype=logits.dtype, device=logits.device)
    top_p = top_p.expand(*logits.shape[:-1], 1).reshape(-1, 1)
    if not bool((k < vocab).any() | (top_p < 1).any()):
        return logits
    n = min(vocab, max(NUCLEUS_CANDIDATES, int(k[k < vocab].max()) if bool((k < vocab).any()) else 0))
    cutoff, enough = _cutoffs(rows, k, top_p, n)
    if not bool(enough.all()):
        wide = (~enough).nonzero()[:, 0]
        cutoff[wide] = _cutoffs(rows[wide], k[wide], top_p[wide], vocab)[0]
    return logits.masked_fill(logits < cutoff.reshape(*logits.shape[:-1], 1), float("-inf"))


@dataclass(frozen=True)
class SamplingRows:
    """Each request's sampling settings as ``[B, 1, 1]`` tensors, so one pass samples a batch."""

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor

    @classmethod
    def of(cls, requests: Sequence[NoteRequest], device: torch.device) -> SamplingRows:
        def column(values, dtype):
            return torch.tensor(values, dtype=dtype, device=device)[:, None, None]

        return cls(column([r.sampling.temperature for r in requests], torch.float32),
                   column([r.sampling.top_k for r in requests], torch.long),
                   column([r.sampling.top_p for r in requests], torch.float32))  # fmt: skip


def sample_tokens(logits: torch.Tensor, rows: SamplingRows, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Draw one token per position with each row's settings and random generator. ``[B, L, V]`` -> ``[B, L]``.

    Inverse-CDF sampling: one uniform draw per token from the row's own generator (a
    Gumbel-max draw needs V of them), so a row's tokens depend on its logits, settings and
    generator only, never on the other rows.
    """
    filtered = filter_logits(logits.float() / rows.temperature, rows.top_k, rows.top_p)
    cdf = filtered.softmax(-1).cumsum_(-1)
    draws = torch.stack([torch.rand(logits.shape[1], 1, generator=g) for g in generators]).to(cdf.device)
    # right=True: the first token whose CDF exceeds u, never a zero-probability one
    return torch.searchsorted(cdf, draws * cdf[..., -1:], right=True)[..., 0].clamp_(max=logits.shape[-1] - 1)


@dataclass(frozen=True)
class Latents:
    """What the autoregressor hands the tokenizer decoder for a batch of notes.

    Attributes:
        f_hat: ``[B, D, H, W]`` the quantized latent (every scale's codes, summed).
        pitch: ``[B]`` MIDI pitches. instrument: ``[B, n_instruments]`` mixing weights.
    """

    f_hat: torch.Tensor
    pitch: torch.Tensor
    instrument: torch.Tensor


@dataclass
class _Coarse:
    """A condition's first scales: their token maps, running latent, and KV cache."""

    indices: list[torch.Tensor]
    f_hat: torch.Tensor | None
    caches: list[dict[str, torch.Tensor]]


class NoteGenerator:
    """Generate notes with a tokenizer + autoregressor pair.

    Args:
        tokenizer: a trained :class:`Tokenizer` (eval mode).
        autoregressor: a trained :class:`NextScaleTransformer` over that tokenizer's pyramid.
        instruments: the GM programs the model was trained on (others are refused).
        pitch_range: ``(lo, hi)`` MIDI pitches the model was trained on.
        model_id: a short hash identifying the weights (for caches).
        device: where to run.
        vocoder_iters: Griffin-Lim iterations.
        coarse_scales: how many leading scales to cache per (condition, seed); 0 disables.
        backend: ``eager`` | ``compile`` | ``cuda-graphs`` | ``tensorrt`` (see :meth:`set_backend`).
        precision: the autoregressor and the tokenizer decoder in ``fp32`` or ``bf16``
            (autocast; the autoregressor was trained that way), or ``auto``: bf16 where the
            hardware has native bf16 (CPUs with AVX512-BF16 or AMX, CUDA GPUs that support
            it), else fp32. The decoder's bf16 output differs from fp32 by 0.08 dB on average
            (README, "Speed"). Sampling and the vocoder always run in fp32.
    """

    sample_rate = 16000

    def __init__(self, tokenizer: Tokenizer, autoregressor: NextScaleTransformer, instruments: Sequence[int],
                 pitch_range: tuple[int, int], model_id: str, device: str | torch.device = "cpu",
                 vocoder_iters: int = 8, coarse_scales: int = 4, backend: str = "eager",
                 coarse_cache_size: int = 512, precision: str = "fp32") -> None:  # fmt: skip
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.tokenizer = tokenizer.to(self.device).eval()
        self.autoregressor = autoregressor.to(self.device).eval()
        self.quantizer = self.tokenizer.quantizer
        self.instruments = tuple(sorted(int(i) for i in instruments))
        self.pitch_range = (int(pitch_range[0]), int(pitch_range[1]))
        self.model_id = model_id
        self.front = SpectralFrontEnd(self.tokenizer.config.spectral)
        self.sample_rate = self.front.config.sample_rate
        self.vocoder_iters = vocoder_iters
        if not 0 <= coarse_scales < len(self.quantizer.scales):
            raise MarsError(f"coarse_scales must be in 0..{len(self.quantizer.scales) - 1}, got {coarse_scales}")
        self.coarse_scales = coarse_scales
        self._coarse: OrderedDict[str, _Coarse] = OrderedDict()
        self._coarse_lock = threading.Lock()  # batches may be generated on several threads
        self._coarse_cache_size = coarse_cache_size
        self.coarse_hits = 0
        self.backend = "eager"
        self._step = self.autoregressor.step
        self.set_backend(backend)

    def clear_coarse_cache(self) -> None:
        """Forget every cached coarse scale (the notes made afterwards are the same, only slower)."""
        with self._coarse_lock:
            self._coarse.clear()

    # -- validation ------------------------------------------------------------------------
    def check(self, request: NoteRequest) -> None:
        """Raise :class:`MarsError` if the model cannot make ``request``."""
        lo, hi = self.pitch_range
        if not lo <= request.pitch <= hi:
            raise MarsError(f"pitch {request.pitch} is outside this model's range {lo}..{hi}")
        unknown = sorted(set(request.instrument_weights()) - set(self.instruments))
        if unknown:
            raise MarsError(f"instrument(s) {unknown} not in this model; it knows GM programs {list(self.instruments)}")

    # -- backends --------------------------------------------------------------------------
    def set_backend(self, backend: str) -> None:
        """Choose how the per-scale step runs.

        * ``eager``: plain PyTorch (CPU or GPU).
        * ``compile``: ``torch.compile`` of the per-scale step (each scale has a fixed shape).
        * ``cuda-graphs``: ``torch.compile(mode="reduce-overhead")``, which records CUDA graphs;
          GPU only. Unverified here: no GPU on the development machines.
        * ``tensorrt``: torch-tensorrt through ``torch.compile(backend="tensorrt")``; needs the
          ``tensorrt`` extra and a GPU. Unverified here.
        """
        if backend not in BACKENDS:
            raise MarsError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend in ("cuda-graphs", "tensorrt") and self.device.type != "cuda":
            raise MarsError(f"backend {backend!r} needs a CUDA GPU; this generator runs on {self.device}")
        step = self.autoregressor.step
        if backend == "compile":
            step = torch.compile(step, dynamic=False)
        elif backend == "cuda-graphs":
            step = torch.compile(step, mode="reduce-overhead", dynamic=False)
        elif backend == "tensorrt":
            try:
                import torch_tensorrt  # noqa: F401
            except ImportError:
                raise MarsError("backend 'tensorrt' needs torch-tensorrt: pip install 'mars-synth[tensorrt]'") from None
            step = torch.compile(step, backend="tensorrt", dynamic=False)
        self._step, self.backend = step, backend

    # -- generation ------------------------------------------------------------------------
    def _conditions(self, requests: Sequence[NoteRequest]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_inst = self.autoregressor.config.n_instruments
        weights = torch.zeros(len(requests), n_inst)
        for row, req in enumerate(requests):
            for program, w in req.instrument_weights().items():
                weights[row, program] = w
        pitch = torch.tensor([r.pitch for r in requests])
        velocity = torch.tensor([velocity_bucket(r.velocity) for r in requests])
        return weights.to(self.device), pitch.to(self.device), velocity.to(self.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _guided_logits(self, cond: torch.Tensor, uncond: torch.Tensor | None, k: int,
                       scale_input: torch.Tensor | None, caches, guidance: torch.Tensor) -> torch.Tensor:  # fmt: skip
        with self._autocast():
            return self._guided_logits_inner(cond, uncond, k, scale_input, caches, guidance).float()

    def _guided_logits_inner(self, cond, uncond, k, scale_input, caches, guidance):
        if uncond is None:
            return self._step(cond, k, scale_input, caches)
        both = self._step(torch.cat([cond, uncond]), k,
                          None if scale_input is None else torch.cat([scale_input, scale_input]), caches)  # fmt: skip
        c, u = both.chunk(2)
        return c + guidance[:, None, None] * (c - u)

    @torch.no_grad()
    def generate_spectrograms(self, requests: Sequence[NoteRequest], use_kv_cache: bool = True,
                              use_coarse_cache: bool = True) -> torch.Tensor:  # fmt: skip
        """Log-spectrograms ``[B, 1, F, T]`` for ``requests`` (validated first)."""
        if not requests:
            return torch.zeros(0, 1, *self.front.config.shape)
        return self.decode(self.generate_latents(requests, use_kv_cache, use_coarse_cache))

    @torch.no_grad()
    def generate_latents(self, requests: Sequence[NoteRequest], use_kv_cache: bool = True,
                         use_coarse_cache: bool = True) -> Latents:  # fmt: skip
        """The autoregressor's half: every scale's tokens, summed into the tokenizer's latent."""
        for req in requests:
            self.check(req)
        ar, q = self.autoregressor, self.quantizer
        weights, pitch, velocity = self._conditions(requests)
        cond = ar.condition(weights, pitch, velocity)
        guidance = torch.tensor([r.sampling.guidance for r in requests], device=self.device)
        rows = SamplingRows.of(requests, self.device)
        uncond = None
        if bool((guidance > 0).any()):
            uncond = ar.condition.null.expand_as(cond)
        keys = [self.condition_key(r) for r in requests]
        coarse_gens = [torch.Generator().manual_seed(self._condition_seed(key)) for key in keys]
        fine_gens = [torch.Generator().manual_seed(int(r.seed)) for r in requests]

        def generators(k: int) -> list[torch.Generator]:
            return coarse_gens if k < self.coarse_scales else fine_gens

        if not use_kv_cache:
            return self._generate_without_cache(rows, cond, uncond, guidance, generators, pitch, weights)

        n_coarse = self.coarse_scales if use_coarse_cache else 0
        start, state = self._coarse_start(keys, n_coarse, uncond)
        indices, f_hat, caches = state.indices, state.f_hat, state.caches
        for k in range(start, len(q.scales)):
            scale_input = None if k == 0 else q.next_input(f_hat, k - 1)
            logits = self._guided_logits(cond, uncond, k, scale_input, caches, guidance)
            idx = sample_tokens(logits, rows, generators(k)).reshape(-1, *q.scales[k])
            indices.append(idx)
            f_hat = q.add_scale(f_hat, k, idx)
            if n_coarse and k + 1 == n_coarse:
                self._store_coarse(keys, indices, f_hat, caches, uncond is not None)
        return Latents(f_hat, pitch, weights)

    @torch.no_grad()
    def decode(self, latents: Latents) -> torch.Tensor:
        """The tokenizer decoder's half: latents -> log-spectrograms ``[B, 1, F, T]``, decoded
        :data:`DECODER_CHUNK` notes at a time (the same numbers, a fraction of the memory)."""
        parts = []
        with self._autocast():
            for first in range(0, len(latents.f_hat), DECODER_CHUNK):
                chunk = slice(first, first + DECODER_CHUNK)
                spec = self.tokenizer.decode_latent(latents.f_hat[chunk], latents.pitch[chunk], latents.instrument[chunk])
                parts.append(spec.float())
        return torch.cat(parts)

    @staticmethod
    def condition_key(request: NoteRequest) -> str:
        """What the coarse scales depend on: the request without its seed (velocity as its bucket)."""
        key = request.cache_key()
        key = key.replace(f";v={request.velocity};", f";vb={velocity_bucket(request.velocity)};")
        return key.replace(f";s={request.seed};", ";")

    @staticmethod
    def _condition_seed(key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1

    def _coarse_start(self, keys, n_coarse, uncond) -> tuple[int, _Coarse]:
        """The first scale to generate and the state before it: the cached coarse scales when
        every request of the batch has them (batched), else nothing (scale 0)."""
        caches = [{} for _ in self.autoregressor.blocks]
        with self._coarse_lock:
            if not n_coarse or not all(k in self._coarse for k in keys):
                return 0, _Coarse([], None, caches)
            entries = [self._coarse[k] for k in keys]
            for k in keys:
                self._coarse.move_to_end(k)
            self.coarse_hits += len(keys)
        indices = [torch.cat([e.indices[s] for e in entries]) for s in range(n_coarse)]
        f_hat = torch.cat([e.f_hat for e in entries])
        for layer, cache in enumerate(caches):
            for name in ("k", "v"):
                parts = [e.caches[layer][name] for e in entries]
                if uncond is not None:  # stored as [cond rows; uncond rows] per entry
                    parts = [p[: len(p) // 2] for p in parts] + [p[len(p) // 2 :] for p in parts]
                cache[name] = torch.cat(parts)
        return n_coarse, _Coarse(indices, f_hat, caches)

    def _store_coarse(self, keys, indices, f_hat, caches, guided: bool) -> None:
        with self._coarse_lock:
            b = len(keys)
            for row, key in enumerate(keys):
                if key in self._coarse:  # write-once: a note's coarse scales never change under it
                    self._coarse.move_to_end(key)
                    continue
                rows = [row, row + b] if guided else [row]
                self._coarse[key] = _Coarse(
                    indices=[i[row : row + 1].clone() for i in indices],
                    f_hat=f_hat[row : row + 1].clone(),
                    caches=[{n: c[n][rows].clone() for n in ("k", "v")} for c in caches],
                )
                self._coarse.move_to_end(key)
            while len(self._coarse) > self._coarse_cache_size:
                self._coarse.popitem(last=False)

    def _generate_without_cache(self, rows, cond, uncond, guidance, generators, pitch, weights):
        """Reference path: recompute the whole prefix at every scale (no KV cache)."""
        ar, q = self.autoregressor, self.quantizer
        indices: list[torch.Tensor] = []
        f_hat = None
        for k in range(len(q.scales)):
            inputs = q.teacher_inputs(indices + [indices[-1]])[:k] if k else []
            lo = ar.offsets[k]
            with self._autocast():
                logits = ar.prefix_logits(cond, inputs)[:, lo:].float()
                if uncond is not None:
                    unguided = ar.prefix_logits(uncond, inputs)[:, lo:].float()
                    logits = logits + guidance[:, None, None] * (logits - unguided)
            idx = sample_tokens(logits, rows, generators(k)).reshape(-1, *q.scales[k])
            indices.append(idx)
            f_hat = q.add_scale(f_hat, k, idx)
        return Latents(f_hat, pitch, weights)

    def vocode(self, logspec: torch.Tensor) -> torch.Tensor:
        """``[B, 1, F, T]`` log-spectrogram -> ``[B, N]`` waveform."""
        mag = self.front.log_to_magnitude(logspec[:, 0].float())
        return self.front.griffin_lim(mag, n_iter=self.vocoder_iters)

    def generate(self, requests: Sequence[NoteRequest], return_spectrograms: bool = False):
        """Generate notes.

        Args:
            requests: the notes; each is validated (pitch range, known instruments).
            return_spectrograms: also return the log-spectrograms ``[B, 1, F, T]``.
        Returns:
            float32 ``[B, N]`` waveforms at :attr:`sample_rate` (numpy), and the
            spectrograms (torch) when asked.
        """
        specs = self.generate_spectrograms(requests)
        waves = self.vocode_notes(specs)
        return (waves, specs) if return_spectrograms else waves

    def vocode_notes(self, specs: torch.Tensor) -> np.ndarray:
        """Log-spectrograms ``[B, 1, F, T]`` -> float32 waveforms ``[B, N]`` (numpy).

        Vocoded :data:`VOCODER_CHUNK` notes at a time: the same audio as one call (every note
        is vocoded on its own), in a fraction of the memory at batch 16."""
        out = np.zeros((len(specs), self.front.config.n_samples), np.float32)
        for first in range(0, len(specs), VOCODER_CHUNK):
            out[first : first + VOCODER_CHUNK] = self.vocode(specs[first : first + VOCODER_CHUNK]).cpu().numpy()
        return out

    def generate_batches(self, requests: Sequence[NoteRequest], batch_size: int = 16,
                         pipelined: bool | None = None) -> Iterator[tuple[int, np.ndarray]]:  # fmt: skip
        """Generate many notes in batches, yielding ``(first_index, waves [n, N])`` in order.

        Pipelined (the default on a CPU with 2+ torch threads): each of ``torch.get_num_threads()``
        workers makes whole batches (autoregressor, decoder, vocoder) on one intra-op thread,
        so the cores do different batches instead of splitting every small op between them
        (on the dense example, 2 cores: 14-15 notes/s against 13-14 for a two-stage pipeline
        with the vocoder on its own thread). Every note is bit-identical to what
        :meth:`generate` makes for it alone.

        Args:
            requests: the notes (all validated before any work starts).
            batch_size: notes per model call.
            pipelined: force the pipeline on or off (``None``: on when it can help).
        """
        for req in requests:
            self.check(req)
        if batch_size < 1:
            raise MarsError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(requests), batch_size)
        threads = torch.get_num_threads()
        if pipelined is None:
            pipelined = self.device.type == "cpu" and threads >= 2 and len(starts) >= 2
        if not pipelined:
            for first in starts:
                yield first, self.generate(requests[first : first + batch_size])
            return
        from concurrent.futures import ThreadPoolExecutor

        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads, thread_name_prefix="mars-notes",
                                    initializer=torch.set_num_threads, initargs=(1,)) as pool:  # fmt: skip
                in_flight: deque = deque()
                for first in starts:
                    in_flight.append((first, pool.submit(self.generate, requests[first : first + batch_size])))
                    if len(in_flight) > threads:
                        done, future = in_flight.popleft()
                        yield done, future.result()
                while in_flight:
                    done, future = in_flight.popleft()
                    yield done, future.result()
        finally:
            torch.set_num_threads(threads)

    def generate_many(self, requests: Sequence[NoteRequest], batch_size: int = 16,
                      pipelined: bool | None = None) -> np.ndarray:  # fmt: skip
        """All of :meth:`generate_batches` at once: float32 ``[len(requests), N]``, in request order."""
        out = np.zeros((len(requests), self.front.config.n_samples), np.float32)
        for first, waves in self.generate_batches(requests, batch_size, pipelined):
            out[first : first + len(waves)] = waves
        return out


def load_generator(tokenizer_path: str | Path | None = None, autoregressor_path: str | Path | None = None,
                   device: str | torch.device = "cpu", **options) -> NoteGenerator:  # fmt: skip
    """Load the shipped default model (or the given weight files) as a :class:`NoteGenerator`.

    ``options`` go to :class:`NoteGenerator`; ``precision`` defaults to ``auto`` here.
    """
    options.setdefault("precision", "auto")
    tok_path = Path(tokenizer_path) if tokenizer_path else shipped_path(DEFAULT_TOKENIZER)
    ar_path = Path(autoregressor_path) if autoregressor_path else shipped_path(DEFAULT_AUTOREGRESSOR)
    for path in (tok_path, ar_path):
        if not path.is_file():
            raise MarsError(f"model file {path} is missing; reinstall mars-synth or train one (see README)")
    tokenizer = load_tokenizer(tok_path, device)
    loaded = load_autoregressor(ar_path)
    ar, meta, q = loaded.model, loaded.meta, tokenizer.quantizer
    if ar.scales != list(q.scales) or ar.vocab != q.codebook_size or ar.latent_dim != q.dim:
        raise MarsError(f"{ar_path} was trained for another tokenizer than {tok_path}")
    instruments = meta.get("instruments") or list(range(ar.config.n_instruments))
    pitch_range = tuple(meta.get("pitch_range", (0, 127)))
    return NoteGenerator(tokenizer, ar, instruments, pitch_range, model_id(tok_path, ar_path), device, **options)
