"""Where the engine gets its notes: the one place that loads the model (through ``mars_model.generator``).

Everything else in the engine sees only the :class:`mars_model.api.NoteSource` protocol.
``MARS_SYNTH_NOTE_SOURCE=module:factory`` names another factory returning a NoteSource
(used by the tests' additive instrument, and for experiments); the module is imported
with the current directory on the path.
"""

from __future__ import annotations

import importlib
import os
import sys

from mars_model.api import NoteSource
from mars_model.errors import MarsError

#: Environment variable naming a ``module:factory`` that returns a NoteSource instead of the model.
SOURCE_VARIABLE = "MARS_SYNTH_NOTE_SOURCE"


def default_note_source(device: str = "cpu") -> NoteSource:
    """Load the shipped MARS model as a NoteSource (or the factory named by ``MARS_SYNTH_NOTE_SOURCE``).

    ``device`` is a torch device, or ``"auto"``: CUDA when there is a GPU, else the CPU.

    Raises:
        MarsError: when no trained model is installed, or the named factory cannot be loaded.
    """
    spec = os.environ.get(SOURCE_VARIABLE)
    if spec:
        return _from_spec(spec)
    try:
        generator = importlib.import_module("mars_model.generator")
    except ModuleNotFoundError as err:
        if err.name not in ("mars_model.generator", "mars_model"):
            raise
        raise MarsError("no trained model is installed (mars_model.generator is missing); nothing can be "
                        "generated: reinstall mars-synth") from None  # fmt: skip
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    source = generator.load_generator(None, device=device)
    _check(source, "mars_model.generator.load_generator")
    return source


def live_note_source(device: str = "auto", backend: str = "eager") -> NoteSource:
    """The model for live play: on CUDA when there is a GPU (``device="auto"``), else the CPU.

    ``MARS_SYNTH_NOTE_SOURCE`` still names another NoteSource (the tests' instrument).

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        backend: the NoteGenerator backend (``eager``, ``compile``, ``cuda-graphs``, ``tensorrt``).
    Raises:
        MarsError: no model, or a backend other than ``eager`` for a source that has none.
    """
    if os.environ.get(SOURCE_VARIABLE):
        return default_note_source()
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    source = default_note_source(device)
    if backend != "eager":
        set_backend = getattr(source, "set_backend", None)
        if set_backend is None:
            raise MarsError(f"this note source has no backends; --backend {backend} needs the MARS model")
        set_backend(backend)
    return source


def default_model_id() -> str | None:
    """The model's id without loading its weights, when the model package can tell it cheaply.

    ``render`` uses it to find cached notes without loading torch and the model at all; when
    it is ``None`` the model is loaded to learn its id.
    """
    if os.environ.get(SOURCE_VARIABLE):
        return None
    # Prefer a torch-free answer from the narrow API; the generator module imports torch.
    for module_name in ("mars_model.api", "mars_model.generator"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        model_id = getattr(module, "default_model_id", None)
        if callable(model_id):
            return str(model_id())
    return None


def default_model_instruments() -> tuple[int, ...] | None:
    """The instruments :func:`default_note_source` makes, without loading it (torch-free):
    GM programs 0-127 and drum kits 128 + kit. ``None`` when it cannot tell that cheaply
    (``MARS_SYNTH_NOTE_SOURCE`` names another source, or the weight file lists none)."""
    if os.environ.get(SOURCE_VARIABLE):
        return None
    from mars_model.api import default_model_instruments as read_instruments

    return read_instruments()


def default_note_rate() -> int | None:
    """The rate of the notes :func:`default_note_source` makes, without loading it (torch-free).

    ``None`` when ``MARS_SYNTH_NOTE_SOURCE`` names another source: only that source knows.
    """
    if os.environ.get(SOURCE_VARIABLE):
        return None
    from mars_model.api import MODEL_SAMPLE_RATE

    return MODEL_SAMPLE_RATE


def _from_spec(spec: str) -> NoteSource:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise MarsError(f"{SOURCE_VARIABLE}={spec!r}: expected 'module:factory'")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise MarsError(f"{SOURCE_VARIABLE}={spec!r}: cannot load it ({err})") from None
    source = factory()
    _check(source, spec)
    return source


def _check(source: object, where: str) -> None:
    if not isinstance(source, NoteSource):
        raise MarsError(f"{where} did not return a NoteSource (sample_rate, pitch_range, model_id, generate)")
