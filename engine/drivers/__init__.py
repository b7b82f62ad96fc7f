"""Drivers: the audio output stream (sounddevice/PortAudio), MIDI input ports (python-rtmidi + mido), and
real-time scheduling of the helper threads (SCHED_FIFO)."""
