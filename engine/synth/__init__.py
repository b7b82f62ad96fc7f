"""The engine core (voices, envelopes, loops, stealing, mixer) shared by live play and ``render``."""

from engine.synth.channel import ChannelState
from engine.synth.mixer import SoftLimiter
from engine.synth.sample import HELD_SECONDS, NoteSample, prepare_note
from engine.synth.synth import Synth
from engine.synth.voice import Patch, Voice, VoiceState, velocity_gain

__all__ = ["HELD_SECONDS", "ChannelState", "NoteSample", "Patch", "SoftLimiter", "Synth", "Voice",
           "VoiceState", "prepare_note", "velocity_gain"]  # fmt: skip
