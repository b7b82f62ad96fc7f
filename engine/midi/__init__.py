"""MIDI: reading files into sample-stamped messages, and mapping programs and channels to presets."""

from engine.midi.dispatch import NoteStart, apply_message
from engine.midi.midifile import MidiScore, TimedMessage, read_midi_file
from engine.midi.program_map import DRUM_CHANNEL, ProgramMap

__all__ = ["DRUM_CHANNEL", "MidiScore", "NoteStart", "ProgramMap", "TimedMessage", "apply_message",
           "read_midi_file"]
