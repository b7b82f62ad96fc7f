"""The one training loop behind every model: seeded, resumable, with progress, on CPU, GPU or torchrun.

A run lives in a directory::

    RUN/config.yaml     the configuration it was started with
    RUN/last.pt         model, optimizer, step and RNG states (written atomically)
    RUN/log.jsonl       one line of losses per logged step

Resuming (running the same command again) continues from ``last.pt`` and gives the
same loss trajectory as an uninterrupted run: the data order is a function of
``(seed, epoch)`` only, and every random state is saved with the checkpoint. A
checkpoint made with another configuration is refused with one clear error.

Multi-GPU: start the same command under ``torchrun --nproc_per_node=N``; each rank
takes every N-th batch item of the shared order and DistributedDataParallel averages
gradients. Only rank 0 writes files and shows the progress bar.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mars_model.config import dataclass_from_dict
from mars_model.errors import MarsError
from mars_model.weights_io import load_weights


@dataclass
class TrainConfig:
    """Optimisation settings shared by all models (the ``train:`` section of a YAML config).

    Args:
        steps: optimizer steps in total.
        batch_size: items per step (across all ranks).
        lr: peak learning rate (AdamW), reached after ``warmup`` steps, cosine decay to 10 %.
        weight_decay: AdamW weight decay.
        grad_clip: max gradient norm (0 = off).
        checkpoint_every: steps between checkpoints.
        log_every: steps between log lines.
        seed: seed of model init, data order and every random draw.
        threads: CPU threads for torch (0 = torch's default).
        precision: ``fp32``, or ``bf16`` autocast for the forward pass (faster on CPUs with
            AVX-512 BF16 and on GPUs; the optimizer state stays fp32).
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    threads: int = 0
    precision: str = "fp32"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "train") -> TrainConfig:
        cfg = dataclass_from_dict(cls, raw, where)
        if cfg.precision not in ("fp32", "bf16"):
            raise MarsError(f"{where}.precision must be fp32 or bf16, got {cfg.precision!r}")
        return cfg


@dataclass
class AugmentConfig:
    """Transposition augmentation (the optional ``augment:`` section of the tokenizer's and
    the autoregressor's configs).

    Args:
        pitch_shift: largest transposition in semitones, either way (0 = off). A chosen note is
            moved by a non-zero whole number of semitones drawn uniformly from
            ``[-pitch_shift, pitch_shift]`` (:func:`mars_model.spectral.pitch_shift_log_spectrogram`)
            and its pitch label moves with it. The split holds out whole (instrument, pitch)
            pairs, so the models must make pitches of an instrument they never heard;
            transposed neighbours are what a sample player would play there.
        probability: chance that a note of a batch is transposed.
    """

    pitch_shift: int = 0
    probability: float = 0.5

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> AugmentConfig:
        cfg = dataclass_from_dict(cls, raw or {}, "augment")
        if not 0 <= cfg.pitch_shift <= 12:
            raise MarsError(f"augment.pitch_shift must be 0..12 semitones, got {cfg.pitch_shift}")
        if not 0.0 <= cfg.probability <= 1.0:
            raise MarsError(f"augment.probability must be in [0, 1], got {cfg.probability}")
        return cfg

    def draw(self, pitches: np.ndarray, seed: int, idx: np.ndarray, movable: np.ndarray | None = None) -> np.ndarray:
        """Semitone shifts ``[B]`` for a batch (0 = as recorded), reproducible from the batch.

        The generator is seeded by the run's seed and the batch's note indices, so a resumed
        run draws exactly what the uninterrupted run drew. ``movable`` (``[B]`` bool) keeps
        the notes it marks False as recorded: a drum key is a sound, not a pitch to move.
        """
        if not self.pitch_shift:
            return np.zeros(len(idx), dtype=np.int64)
        rng = np.random.default_rng([seed, *map(int, idx)])
        size = rng.integers(1, self.pitch_shift + 1, len(idx))
        shifts = np.where(rng.random(len(idx)) < 0.5, -size, size)
        shifts[rng.random(len(idx)) >= self.probability] = 0
        shifts[(pitches + shifts < 0) | (pitches + shifts > 127)] = 0
        if movable is not None:
            shifts[~np.asarray(movable, bool)] = 0
        return shifts


def config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of everything in a config except the ``train`` section's run-length knobs."""
    relevant = {k: v for k, v in config.items() if k != "train"}
    train = dict(config.get("train", {}))
    for key in ("steps", "checkpoint_every", "log_every", "threads"):
        train.pop(key, None)
    relevant["train"] = train
    return hashlib.sha1(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the torchrun process group if launched by torchrun; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def pick_device(name: str | None = None, dist_info: DistInfo | None = None) -> torch.device:
    """``cuda`` (this rank's GPU) when available unless ``name`` says otherwise, else CPU."""
    if name and name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise MarsError(f"device {name!r} requested but no CUDA GPU is available")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", dist_info.local_rank if dist_info else 0)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``0.1 * lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class BatchOrder:
    """Which dataset items make up step ``s``: a seeded permutation per epoch, no state."""

    def __init__(self, n_items: int, batch_size: int, seed: int, dist_info: DistInfo) -> None:
        if n_items < batch_size:
            raise MarsError(f"the training set has {n_items} items, fewer than one batch ({batch_size})")
        self.n, self.batch, self.seed, self.dist = n_items, batch_size, seed, dist_info
        self.per_epoch = n_items // batch_size
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def indices(self, step: int) -> np.ndarray:
        epoch, within = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        batch = self._perm[within * self.batch : (within + 1) * self.batch]
        return batch[self.dist.rank :: self.dist.world]


LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor], int], tuple[torch.Tensor, dict[str, float]]]


def collate(items: list[Mapping[str, torch.Tensor]], device: torch.device) -> dict[str, torch.Tensor]:
    """Stack a list of dict items into a dict of batched tensors on ``device``."""
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]).to(device) for k in items[0]}


def train(
    model: torch.nn.Module,
    loss_fn: LossFn,
    dataset: Any,
    config: Mapping[str, Any],
    run_dir: str | os.PathLike,
    *,
    device: torch.device | None = None,
    fetch: Callable[[np.ndarray], Mapping[str, torch.Tensor]] | None = None,
    on_checkpoint: Callable[[torch.nn.Module, int], None] | None = None,
    quiet: bool = False,
    stop_after: int | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on ``dataset`` with ``loss_fn``; resume from ``run_dir/last.pt`` if present.

    Args:
        model: the module to train (already built with its config).
        loss_fn: ``(model, batch, step) -> (loss, {name: value})``.
        dataset: indexable items (dicts of tensors); or anything ``fetch`` understands.
        config: the whole YAML config (its ``train`` section is a :class:`TrainConfig`).
        run_dir: where checkpoints and logs go.
        device: defaults to :func:`pick_device`.
        fetch: ``indices -> batch dict`` (default: index ``dataset`` and stack).
        on_checkpoint: called after each checkpoint (e.g. to write evaluation samples).
        quiet: no progress bar.
        stop_after: stop (with a checkpoint) after this many steps of this call; for tests and
            for bounded sessions. The schedule still follows ``train.steps``.
    Returns:
        The log records of the steps this call ran (``step``, ``loss``, and ``loss_fn`` metrics).
    """
    from tqdm import tqdm

    cfg = TrainConfig.from_dict(config.get("train", {}))
    dist_info = init_distributed()
    device = device or pick_device(None, dist_info)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    chash = config_hash(config)
    ckpt_path = run_dir / "last.pt"

    model.to(device)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or "embed" in name or "codebook" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )  # fmt: skip

    start = 0
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, expect_hash=chash)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        _set_rng_state(state["rng"])
    else:
        seed_everything(cfg.seed + 1000)  # the model was initialised under cfg.seed by its builder
        if dist_info.is_main:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(_plain(config), sort_keys=False))

    train_model = model
    if dist_info.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    order = BatchOrder(len(dataset), cfg.batch_size, cfg.seed, dist_info)
    fetch = fetch or (lambda idx: collate([dataset[int(i)] for i in idx], device))
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    records: list[dict[str, float]] = []
    bar = tqdm(total=cfg.steps, initial=start, unit="step", disable=quiet or not dist_info.is_main,
               dynamic_ncols=True)  # fmt: skip
    log = open(run_dir / "log.jsonl", "a") if dist_info.is_main else None
    started = time.perf_counter()
    try:
        model.train()
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            batch = fetch(order.indices(step))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss, metrics = loss_fn(train_model, batch, step)
            if not torch.isfinite(loss):
                raise MarsError(f"loss became {loss.item()} at step {step}; lower train.lr and resume")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            record = {"step": step, "loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}
            records.append(record)
            bar.update(1)
            if step % cfg.log_every == 0 or step == end - 1:
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"}, refresh=False)
                if log:
                    log.write(json.dumps({**record, "lr": lr_at(step, cfg),
                                          "seconds": round(time.perf_counter() - started, 2)}) + "\n")  # fmt: skip
                    log.flush()
            done = step + 1
            if dist_info.is_main and (done % cfg.checkpoint_every == 0 or done == end):
                save_checkpoint(ckpt_path, model, optimizer, done, chash, config)
                if on_checkpoint:
                    on_checkpoint(model, done)
    finally:
        bar.close()
        if log:
            log.close()
    return records


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return _plain(asdict(obj))
    return obj


def save_checkpoint(path: Path, model, optimizer, step: int, chash: str, config: Mapping) -> None:
    """Write a checkpoint atomically (a run cut off mid-write keeps the previous one)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "config_hash": chash, "config": _plain(config), "rng": _rng_state()}, tmp)  # fmt: skip
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, expect_hash: str | None = None) -> dict[str, Any]:
    """Load a checkpoint; with ``expect_hash``, refuse one made with another configuration."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise MarsError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # torch raises many types for a corrupt file
        raise MarsError(f"checkpoint {path} is corrupt or not a mars-synth checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise MarsError(f"checkpoint {path} is not a mars-synth checkpoint")
    if expect_hash is not None and state.get("config_hash") != expect_hash:
        raise MarsError(
            f"checkpoint {path} was made with a different config (hash {state.get('config_hash')}, "
            f"this config {expect_hash}); use a new run directory or the original config"
        )
    return state


def restore_run(run_dir: str | os.PathLike, section: str, config_cls, build) -> tuple[dict[str, Any], Any, torch.nn.Module]:
    """A run's last checkpoint as a model, for export.

    Args:
        run_dir: the run directory (holding ``last.pt``).
        section: the config section describing the model (``tokenizer``, ``codec`` ...).
        config_cls: that section's dataclass (with ``from_dict``).
        build: ``config -> freshly built model``.
    Returns:
        ``(checkpoint state, section config, model with the checkpoint's weights)``.
    """
    state = load_checkpoint(Path(run_dir) / "last.pt")
    cfg = config_cls.from_dict(state["config"].get(section))
    model = build(cfg)
    model.load_state_dict(state["model"])
    return state, cfg, model


def grow_instrument_table(state: dict[str, Any], name: str, size: int, trained) -> None:
    """Grow the instrument embedding ``state[name]`` to ``size`` rows, in place: the rows of the
    ``trained`` instruments are kept, and every other row (new, or never trained) starts as
    their mean, "an average instrument" rather than noise."""
    table = state[name].float()
    trained = [int(i) for i in trained if int(i) < len(table)]
    rows = table[trained].mean(dim=0).repeat(size, 1)
    rows[trained] = table[trained]
    state[name] = rows


def finetune_init(section: Mapping[str, Any] | None, kind: str, allowed: tuple[str, ...] = ("init",)) -> dict[str, Any] | None:
    """The weight file named by a config's ``finetune:`` section (``None`` without one).

    Checks the section's keys (``allowed``, ``init`` required) and loads ``init`` as a shipped
    file of ``kind``; the caller checks that it fits its model and loads the state.
    """
    if not section:
        return None
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise MarsError(f"finetune: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if "init" not in section:
        raise MarsError(f"finetune: needs init (the {kind} weights to start from)")
    return load_weights(section["init"], kind)
