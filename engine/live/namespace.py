"""The names live play answers to: the OSC address namespace and the queries ``/mars/q/<what>``.

Kept here, below both the engine that answers the queries (:meth:`engine.live.engine.LiveEngine.query`)
and the OSC server that routes the addresses (:mod:`engine.bindings.osc`), so neither imports the other.
The namespace is also documented in the README (section "Live play").
"""

from __future__ import annotations

#: Every OSC address and what it takes (answered by ``/mars/q/namespace``).
NAMESPACE = {
    "/mars/note": "pitch velocity [id]: note on, MIDI channel 1 (velocity 0 = note off)",
    "/mars/note_off": "pitch [id]: note off (by id when given)",
    "/mars/fnote": "freq_hz velocity [id]: note at any frequency (nearest key, detuned by pitch bend)",
    "/mars/cc": "channel(1-16) number value: MIDI control change",
    "/mars/bend": "channel(1-16) value(-8192..8191): pitch bend",
    "/mars/program": "channel(1-16) program(0-127): program change (GM map)",
    "/mars/preset": "name: play this preset on every channel",
    "/mars/morph": "preset_a preset_b t(0..1): play a timbre morph of two presets on every channel",
    "/mars/param/<name>": "value: live parameter (gain, attack, release, transpose, reverb, chorus, reverb_time)",
    "/mars/panic": "silence every voice, pedals up",
    "/mars/q/<what>": "query (voices, status, presets, preset, params, latency, namespace), answered to the sender",
}

#: The queries ``/mars/q/<what>`` answers (see :meth:`engine.live.engine.LiveEngine.query`).
QUERIES = ("voices", "status", "presets", "preset", "params", "latency", "namespace")
