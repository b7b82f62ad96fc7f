"""Data: building an NSynth-style note set from SoundFonts, and reading NSynth-layout sets."""
