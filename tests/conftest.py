"""Shared fixtures: deterministic torch, and skips for optional external programs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


# One thread: the tests use tiny models, and extra OpenMP threads only fight over the CPU.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def timgm_soundfont() -> Path:
    """The small GM SoundFont used by dataset tests (Debian: timgm6mb-soundfont)."""
    if not TIMGM.is_file() or shutil.which("fluidsynth") is None:
        pytest.skip("needs fluidsynth and timgm6mb-soundfont (installed by .ci/run)")
    return TIMGM
