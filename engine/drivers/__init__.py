"""Drivers: the audio output stream (sounddevice/PortAudio) and MIDI input ports (python-rtmidi + mido)."""
