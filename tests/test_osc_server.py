"""The OSC front end over a real UDP socket, without audio: what each address turns into, the
answers on /mars/error and /mars/q/..., bundle timetags, morphs, and a 10,000-packet fuzz."""

from __future__ import annotations

import queue
import socket
import time

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.bindings.osc import MAX_LOOKAHEAD_SECONDS, OscServer, morph_preset
from engine.preset import find_preset, load_presets


@pytest.fixture
def server():
    events: queue.SimpleQueue = queue.SimpleQueue()
    presets = load_presets()
    osc = OscServer(events.put, lambda what: [7, 64] if what == "voices" else None, presets, port=0)
    osc.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2.0)
    yield osc, events, client
    client.close()
    osc.close()


def send(client, osc, address, *args):
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    client.sendto(builder.build().dgram, osc.address)


def answer(client) -> tuple[str, list]:
    data, _ = client.recvfrom(65536)
    message = OscMessage(data)
    return message.address, list(message.params)


def test_notes_take_ints_and_floats_alike(server):
    osc, events, client = server
    send(client, osc, "/mars/note", 60, 100)
    send(client, osc, "/mars/note", 60.0, 100.0, 7)
    send(client, osc, "/mars/note", 61, 0)  # velocity 0 is a note-off
    send(client, osc, "/mars/fnote", 440.0, 90, "x")
    got = [events.get(timeout=2) for _ in range(4)]
    assert [(e.kind, e.payload) for e in got] == [
        ("note", (60, 100, None)), ("note", (60, 100, 7)), ("note_off", (61, None)), ("fnote", (440.0, 90, "x"))
    ]  # fmt: skip
    assert all(e.source == "osc" and e.due is None for e in got)


def test_channel_messages_become_mido_messages_on_channels_1_to_16(server):
    osc, events, client = server
    send(client, osc, "/mars/cc", 16, 64, 127.0)
    send(client, osc, "/mars/bend", 1, -8192)
    send(client, osc, "/mars/program", 2, 40)
    cc, bend, program = (events.get(timeout=2).payload for _ in range(3))
    assert (cc.type, cc.channel, cc.control, cc.value) == ("control_change", 15, 64, 127)
    assert (bend.type, bend.channel, bend.pitch) == ("pitchwheel", 0, -8192)
    assert (program.type, program.channel, program.program) == ("program_change", 1, 40)


@pytest.mark.parametrize(("address", "args", "text"), [
    ("/mars/nothing", [], "unknown address"),
    ("/mars/note", [128, 100], "pitch must be in 0..127"),
    ("/mars/note", [60], "expects pitch velocity [id]"),
    ("/mars/note", ["c4", 100], "pitch must be a number"),
    ("/mars/note", [float("nan"), 100], "pitch must be a number"),
    ("/mars/cc", [0, 7, 100], "channel must be in 1..16"),
    ("/mars/bend", [1, 9000], "bend must be in -8192..8191"),
    ("/mars/preset", ["kazoo"], "unknown preset 'kazoo'"),
    ("/mars/morph", ["flute", "strings", 1.5], "t must be in 0..1"),
    ("/mars/param/volume", [1.0], "unknown parameter 'volume'"),
    ("/mars/param/gain", [9.0], "gain must be in 0..4"),
    ("/mars/param/reverb", [-0.5], "reverb must be in 0..4"),
    ("/mars/param/reverb_time", [0.0], "reverb_time must be in 0.1..20"),
    ("/mars/q/everything", [], "unknown query"),
])  # fmt: skip
def test_bad_messages_are_answered_on_mars_error(server, address, args, text):
    osc, events, client = server
    send(client, osc, address, *args)
    reply_address, (where, message) = answer(client)
    assert reply_address == "/mars/error" and where == address and text in message
    assert events.empty()


def test_effect_parameters_become_param_events(server):
    osc, events, client = server
    send(client, osc, "/mars/param/reverb", 0.0)
    send(client, osc, "/mars/param/chorus", 1)
    send(client, osc, "/mars/param/reverb_time", 2.5)
    got = [events.get(timeout=2) for _ in range(3)]
    assert [(e.kind, e.payload) for e in got] == [("param", ("reverb", 0.0)), ("param", ("chorus", 1.0)),
                                                  ("param", ("reverb_time", 2.5))]  # fmt: skip


def test_queries_are_answered_to_the_sender(server):
    osc, _, client = server
    send(client, osc, "/mars/q/voices")
    assert answer(client) == ("/mars/q/voices", [7, 64])


def test_bundles_carry_their_due_time_and_far_ones_are_refused(server):
    osc, events, client = server
    bundle = OscBundleBuilder(time.time() + 0.5)
    bundle.add_content(OscMessageBuilder("/mars/panic").build())
    client.sendto(bundle.build().dgram, osc.address)
    event = events.get(timeout=2)
    assert event.kind == "panic" and event.due == pytest.approx(time.monotonic() + 0.5, abs=0.05)
    far = OscBundleBuilder(time.time() + MAX_LOOKAHEAD_SECONDS + 5)
    far.add_content(OscMessageBuilder("/mars/panic").build())
    client.sendto(far.build().dgram, osc.address)
    assert "ahead" in answer(client)[1][1]
    assert events.empty()


def test_morph_mixes_instruments_and_envelopes_in_steps():
    flute, strings = find_preset("flute"), find_preset("strings")
    half = morph_preset(flute, strings, 0.51)  # rounded to the 0.05 grid: the same notes as 0.5
    assert half.request(60, 100, 0).instrument_weights() == {flute.instrument: 0.5, strings.instrument: 0.5}
    assert half.patch.release == pytest.approx((flute.patch.release + strings.patch.release) / 2)
    assert half.cache == "memory" and half.identity() == morph_preset(flute, strings, 0.5).identity()
    assert morph_preset(flute, strings, 0.0).request(60, 100, 0).instrument_weights() == {flute.instrument: 1.0}


def _wait_for(condition, seconds: float) -> None:
    """Poll ``condition`` until it holds or ``seconds`` pass (then go on: the asserts judge)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.0005)


def test_ten_thousand_random_and_malformed_packets_leave_the_server_answering(server):
    osc, events, client = server
    rng = np.random.default_rng(11)
    addresses = ["/mars/note", "/mars/cc", "/mars/morph", "/mars/q/voices", "/mars/param/attack", "/zz"]
    for i in range(10_000):
        kind = i % 3
        if kind == 0:
            data = rng.integers(0, 256, int(rng.integers(1, 80))).astype(np.uint8).tobytes()
        elif kind == 1:
            data = (b"/mars/note\x00\x00,", b"#bundle\x00")[i % 2] + rng.integers(0, 256, 24).astype(np.uint8).tobytes()
        else:
            builder = OscMessageBuilder(addresses[int(rng.integers(0, len(addresses)))])
            for _ in range(int(rng.integers(0, 4))):
                builder.add_arg([float(rng.normal() * 100), int(rng.integers(-200, 200)), "x", b"\x00\x01"][int(rng.integers(0, 4))])
            data = builder.build().dgram
        client.sendto(data, osc.address)
        if i % 50 == 49:  # flow control: at most 100 packets in flight, however busy the machine
            _wait_for(lambda sent=i + 1: sent - osc.packets <= 100, seconds=5.0)
    assert osc._thread.is_alive()
    client.settimeout(5.0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the burst's own answers first, then ours
        send(client, osc, "/mars/q/voices")
        try:
            while True:
                if answer(client) == ("/mars/q/voices", [7, 64]):
                    break
        except TimeoutError:
            continue
        break
    else:
        pytest.fail("the server stopped answering")
    assert osc.packets >= 9_900  # (a few may still drop in the socket buffer, as UDP does)
    assert osc.errors > 0 and osc.malformed > 0
