"""engine: the real-time and offline engine of mars-synth (voices, mixer, MIDI, OSC, audio out, CLI)."""
