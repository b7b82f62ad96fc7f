"""``mars-synth play`` on a JACK server of its own per test (nothing else in the graph): a keyboard that
disappears mid-note, and a minute of 32 held voices at 128-frame blocks.

A separate module from test_jack_live.py on purpose: libjack cannot talk to two servers from one
process, so these tests start only after that module's server and clients are gone. The
harness (server, engine process, probe client, reference client) is test_jack_live.py's.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_jack_live import (
    RATE,
    SETTLE_FRAMES,
    EnginePlayer,
    JackProbe,
    assert_engine_on_time,
    running_jack_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def own_jack_server():
    """A JACK server for one test: nothing else in its graph (no other engine, no other probe)."""
    yield from running_jack_server()



def test_a_disconnected_keyboard_releases_its_notes_even_under_the_pedal(own_jack_server, tmp_path):
    import jack

    jack_server = own_jack_server
    keyboard = jack.Client("keyboard", servername=jack_server.name, no_start_server=True)
    out = keyboard.midi_outports.register("out")
    queue: list[bytes] = []

    @keyboard.set_process_callback
    def process(frames):
        out.clear_buffer()
        while queue:
            out.write_midi_event(0, queue.pop(0))

    keyboard.activate()
    engine = EnginePlayer(jack_server, tmp_path, "--preset", "drawbar_organ", "--midi-in", "keyboard:out",
                          "--no-reverb", "--no-chorus")  # (a released note then ends at once)  # fmt: skip
    probe = None
    try:
        engine.wait_ready()
        probe = JackProbe(jack_server, name="probe-disconnect").start(midi_to=None)
        queue.extend([bytes([0xB0, 64, 127]), bytes([0x90, 60, 100]), bytes([0x90, 64, 100])])
        assert engine.voices(2) == 2
        keyboard.deactivate()
        keyboard.close()  # the device is gone, pedal down and keys held
        assert engine.voices(0) == 0
        quiet_from = probe.now() + SETTLE_FRAMES
        time.sleep(0.2)
        assert np.abs(probe.recording(quiet_from)).max() == 0.0
    finally:
        keyboard.close()  # (again, when the test failed before it: a JACK client left to the garbage
        # collector is closed after its server is gone, and that crashes the process)
        if probe is not None:
            probe.close()
        assert engine.stop() == 0
    assert "disconnected" in engine.output()


@pytest.mark.slow
def test_sixty_seconds_of_32_voices_at_128_frames_has_no_underflow(own_jack_server, tmp_path):
    jack_server = own_jack_server
    engine = EnginePlayer(jack_server, tmp_path, "--preset", "strings", "--no-midi")
    probe = None
    try:
        engine.wait_ready()
        probe = JackProbe(jack_server, seconds=70, name="probe-long").start(midi_to=None)
        jack_server.reference.follow(engine.process.pid)
        log_at = jack_server.log_position()
        for pitch in range(40, 72):
            engine.osc.send("/mars/note", pitch, 100)  # generated ahead: the steady state of a warm cache
        assert engine.voices(32) == 32
        start = probe.now()
        time.sleep(60)
        status = engine.osc.query("status", timeout=5.0)
        heard = probe.recording(start, start + 60 * RATE)
        assert status[0] == 32  # still sounding (looped past the generated 3 s)
        assert_engine_on_time(jack_server, log_at, status[1], 60 * RATE // 128)
        print(f"60 s, 32 voices, 128 frames: {status[1]} underflows flagged, late clients "
              f"{jack_server.late_clients(log_at)}")  # fmt: skip
        # Never a silent block in the cycles JACK ran. A cycle the server skipped (an xrun: how many is
        # the machine's doing, judged above against this run's yardsticks) is not recorded at all;
        # the recording only has to span the minute, so the check covers all of it.
        frames, _ = probe._window(start, start + 60 * RATE)
        print(f"recorded {heard.shape[0] / (60 * RATE):.1%} of the minute's frames")
        assert frames.shape[0] > 0 and frames.min() - start < RATE and start + 59 * RATE <= frames.max()
        blocks = heard[: heard.shape[0] // 128 * 128].reshape(-1, 128)
        assert (np.sqrt((blocks**2).mean(axis=1)) > 1e-3).all()  # never a silent block
        engine.osc.send("/mars/panic")
    finally:
        if probe is not None:
            probe.close()
        code = engine.stop()
    assert code == 0, engine.output()
    summary = [line for line in engine.output().splitlines() if line.startswith("mars-synth play: played")]
    assert summary and "underflows" in summary[0], engine.output()
