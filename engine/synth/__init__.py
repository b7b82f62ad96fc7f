"""The engine core (voices, envelopes, loops, stealing, mixer) shared by live play and ``render``.

How a caller drives it (``engine.render`` does exactly this offline)::

    note = prepare_note(wave, source.sample_rate, synth.sample_rate, root_pitch, target_db)  # once per note, off the audio thread
    synth = Synth(sample_rate=48000, polyphony=64, block_size=256, gain=0.5)
    # per block, on ONE thread (the audio callback when live):
    #   apply the events due in this block at their frame offsets, rendering the frames between them
    synth.note_on(channel, key, velocity, note, preset.patch, note.velocity_gain(velocity, preset.patch.velocity_sensitivity))
    synth.control_change(channel, 64, 127); synth.pitch_bend(channel, 4096); synth.note_off(channel, key)
    peak = synth.render(out)          # out: float32 [2, n], n <= block_size; overwritten, limited

Threading: :class:`Synth` and its voices are not thread-safe and take no locks; call them
from one thread only. Other threads hand it work through a queue (``collections.deque``
append/popleft are atomic) holding mido messages plus, for note-ons, a ready
:class:`NoteSample` (immutable, safe to share). ``render`` and the control methods
allocate no arrays; ``prepare_note`` and the note cache do, and belong off the audio thread.
"""

from engine.synth.channel import ChannelState
from engine.synth.mixer import SoftLimiter
from engine.synth.sample import HELD_SECONDS, NoteSample, prepare_note
from engine.synth.synth import Synth
from engine.synth.voice import Patch, Voice, VoiceState

__all__ = ["HELD_SECONDS", "ChannelState", "NoteSample", "Patch", "SoftLimiter", "Synth", "Voice",
           "VoiceState", "prepare_note"]  # fmt: skip
