"""Bindings: the ways people drive the engine (command line, OSC)."""
