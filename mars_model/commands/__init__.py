"""Command-line front ends for the model-side tools (dataset, eval, codec, train).

These are part of ``mars_model``'s public surface so that ``engine``'s CLI can
offer them without reaching into model internals. Each module defines
``add_arguments(parser)`` and ``run(args) -> int`` and imports heavy
dependencies (torch) inside ``run`` so that ``mars-synth --help`` stays fast.
"""
