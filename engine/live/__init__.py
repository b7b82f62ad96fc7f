"""Live play (``mars-synth play``): MIDI and OSC in, the model kept warm, sound out with low, steady latency.

The threads and what each may do (FluidSynth's synth/rvoice split, ../shared/DESIGN.md)::

    MIDI poll thread (engine.drivers.midi_in) --+
    OSC server thread (engine.bindings.osc) ----+--> event queue (timestamped LiveEvent)
                                                      |
    control thread (engine.live.control) <------------+   decides: which note sample plays a
        |   ^                                              key (exact, or the nearest ready pitch
        |   | NoteReady events                             transposed), crossfades, bundle timing
        |   |
        |  generation worker (engine.live.generation): owns the model and the NoteCache;
        |   generates in priority order (played note > neighbours > rest of the range), batched
        v
    two lock-free deques of AudioCommand (immediate, timed)
        |
    audio callback (engine.live.renderer): pops commands, drives the Synth, mixes. It never
        allocates arrays, takes locks, logs, or waits for the model.

:class:`engine.live.engine.LiveEngine` builds and runs the whole thing.
"""
