"""Shared fixtures: deterministic torch, and skips for optional external programs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
FLUIDR3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


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


@pytest.fixture(scope="session")
def fluidr3_soundfont() -> Path:
    """FluidR3_GM, the SoundFont the note set and the playback calibration come from (Debian:
    fluid-soundfont-gm). Skipped where it is missing, except in CI, which installs it."""
    if not FLUIDR3.is_file() or shutil.which("fluidsynth") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install fluidsynth and fluid-soundfont-gm (.ci/run)")
        pytest.skip("needs fluidsynth and fluid-soundfont-gm (installed by .ci/run)")
    return FLUIDR3
