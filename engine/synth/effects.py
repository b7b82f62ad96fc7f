"""Send effects on the master bus: a stereo reverb (a feedback delay network) and a stereo chorus.

Both are fed by the synth's send buses (CC91 and CC93 of each channel decide how much of the
channel goes in) and add their wet output to the dry mix before the limiter, as a General
MIDI module's "system effects" do.

Real-time rules, as for the rest of the render side: :meth:`Reverb.process` and
:meth:`Chorus.process` allocate no arrays and take no locks. Every buffer is made in
``__init__`` for the largest block, and a block is a few dozen numpy calls with ``out=``
arguments. Two numpy habits shape the code: an element-wise ufunc on 2-D operands that are not
all contiguous alike, or that broadcasts a column, buffers its operands (NumPy 2 allocates
up to three 32 KiB buffers per call when the rows are short), and so does ``take`` with a
2-D index. So per-line arithmetic is done by matrix products (BLAS reads strided views as
they are), element-wise work on many rows uses 1-D views of contiguous scratch, and stereo
arrays are added row by row.

A recursive filter cannot be run sample by sample in numpy, so the reverb is built so that a
step never needs its own output: it works in chunks no longer than its shortest feedback
loop, and the loop filters that make highs die sooner are two-tap FIRs read from the delay
lines' past, not one-pole IIRs; the taps, the feedback matrix, the output taps and the input
injection are one matrix, so a chunk's whole network is one matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mars_model.errors import MarsError

#: Delay lines in the reverb's feedback network.
REVERB_LINES = 8
#: The lines' lengths in milliseconds before rounding to distinct primes (about 1.12x apart).
LINE_MS = (31.0, 34.9, 39.2, 44.1, 49.6, 55.8, 62.7, 70.6)
#: Time spread (ms) of each input diffusion stage; each stage delays every channel by a
#: different amount inside its span and mixes them with an orthogonal matrix.
DIFFUSER_MS = (5.0, 11.0, 23.0)  # (three: Reverb._step is written out for three)
#: The reverb's pre-delay (ms): the wet sound starts this long after what is sent, as the first
#: reflections of a hall do. It also lets the reverb work in chunks of a fixed length, however
#: the caller's blocks are cut, with no latency beyond it.
PREDELAY_MS = 20.0
#: Longest reverb chunk (frames): the network's product stays on one BLAS thread.
CHUNK_MAX = 1536
#: Longest reverb time accepted (seconds); the render's automatic tail waits at most 30 s.
MAX_REVERB_TIME = 20.0
#: Input and output below this (about -140 dBFS) count as silence for the effects' idle check.
QUIET = 1e-7
#: The reverb looks for silence once per this many frames.
IDLE_CHECK_FRAMES = 1024
#: Wet gain of the reverb at level 1.0, chosen so that a half-second note sent at CC91 = 127
#: gets about as much reverb energy (-11 dB under the dry note) as FluidSynth's default reverb
#: gives FluidR3's piano at CC91 = 127 (-11.7 dB, measured, see docs/benchmarks.md).
REVERB_OUTPUT_GAIN = 0.47
#: Share of the wet reverb taken from the diffuser (the first 40 ms) rather than the network.
EARLY_SHARE = 0.5

#: Chorus voices: (input/output side 0 = left 1 = right, centre delay ms, LFO Hz, LFO phase in turns).
CHORUS_VOICES = ((0, 13.0, 0.31, 0.0), (0, 18.0, 0.43, 0.5), (1, 15.0, 0.37, 0.25), (1, 20.0, 0.29, 0.75))
#: The chorus's delays move along straight lines over pieces of at most this many frames (the
#: LFOs are slow: over 1024 frames the line stays within 0.06 frames of the sine at 44.1 kHz, and
#: the rate of change of the delay steps by under a cent's worth of pitch between pieces).
CHORUS_PIECE = 1024
#: Peak swing of each chorus voice's delay (ms): about 10 cents of pitch wobble at these rates.
CHORUS_DEPTH_MS = 2.5


@dataclass(frozen=True)
class EffectsSettings:
    """The master effects, as ``render`` and ``play`` are told them.

    Args:
        reverb_level: wet reverb gain (linear; 1.0 is the calibrated default, 0 turns the reverb off).
        reverb_time: RT60 in seconds at low frequencies (the time a sound takes to fall by 60 dB).
        reverb_damping: 0..1, how much faster highs die than lows (0: evenly; 1: the highest
            frequencies ten times as fast, 8 kHz about 1.7 times as fast).
        reverb_width: 0..1, stereo width of the wet reverb (0: mono; 1: left and right uncorrelated).
        chorus_level: wet chorus gain (linear; 1.0: the chorus is as loud as what is sent to it;
            0 turns the chorus off).
    """

    reverb_level: float = 1.0
    reverb_time: float = 1.8
    reverb_damping: float = 0.5
    reverb_width: float = 1.0
    chorus_level: float = 1.0

    def check(self) -> None:
        """Validate (one MarsError naming the setting and what is allowed)."""
        if not 0 <= self.reverb_level <= 4:
            raise MarsError(f"reverb level must be 0..4 (linear, 0 = off), got {self.reverb_level}")
        if not 0.1 <= self.reverb_time <= MAX_REVERB_TIME:
            raise MarsError(f"reverb time must be 0.1..{MAX_REVERB_TIME:g} seconds, got {self.reverb_time}")
        if not 0 <= self.reverb_damping <= 1:
            raise MarsError(f"reverb damping must be 0..1, got {self.reverb_damping}")
        if not 0 <= self.reverb_width <= 1:
            raise MarsError(f"reverb width must be 0..1, got {self.reverb_width}")
        if not 0 <= self.chorus_level <= 4:
            raise MarsError(f"chorus level must be 0..4 (linear, 0 = off), got {self.chorus_level}")


#: Both effects off: the synth mixes exactly as it would with no effects at all.
DRY = EffectsSettings(reverb_level=0.0, chorus_level=0.0)


class _DelayRows:
    """Rows of delayed signal written side by side at one head and read through fixed taps.

    Every block, :meth:`write` stores ``[rows, m]`` frames at the head (one copy) and
    :meth:`gather` reads every tap ``(row, delay)`` - that row, ``delay`` frames before the
    frame being read - into a contiguous ``[taps, m]`` block with one ``take`` through an
    index built once per block length. The buffer is linear, not circular: when the head
    reaches the end of a row, the last ``reach`` frames are moved back to its start (every
    ten thousand frames or so), so no read or write ever wraps.

    Args:
        rows: signals written each block.
        taps: ``(row, delay)`` pairs, delays in frames (>= 0).
        block: the largest ``m``.
        reach: frames of history to keep (default: the longest tap).
        slack: frames written between two moves back to the start (default: plenty).
    """

    def __init__(self, rows: int, taps: list[tuple[int, int]], block: int, reach: int = 0,
                 slack: int | None = None) -> None:  # fmt: skip
        self.taps = [(int(r), int(d)) for r, d in taps]
        self.reach = max([reach] + [d for _, d in self.taps])
        self.block = int(block)
        # Frames written between moves (the move copies `reach` frames per row).
        slack = max(4 * self.reach, 8192, self.block) if slack is None else int(slack)
        self.pitch = self.reach + self.block + slack
        self.rows = np.zeros((rows, self.pitch), np.float32)
        self.flat = self.rows.reshape(-1)
        self.head = self.reach
        self._index = np.zeros(max(1, len(self.taps)) * self.block, np.intp)
        self._index_frames = 0  # the block length the index is laid out for
        self._ramp = np.arange(self.block, dtype=np.intp)

    def write(self, block: np.ndarray) -> None:
        """Store ``block[:, :m]`` at the head (``m`` = ``block.shape[1]``); call :meth:`advance` after reading."""
        m = block.shape[1]
        if self.head + m > self.pitch:
            start = self.head - self.reach  # >= reach: source and destination never overlap
            for row in self.rows:  # row by row: numpy cannot prove 2-D views disjoint and would copy
                row[: self.reach] = row[start : self.head]
            self.head = self.reach
        np.copyto(self.rows[:, self.head : self.head + m], block)

    def gather(self, m: int, out: np.ndarray) -> None:
        """Read every tap for the ``m`` frames from the head on into ``out[: taps * m]`` (1-D, contiguous)."""
        if m != self._index_frames:
            self._lay_out_index(m)
        view = self.flat[self.head - self.reach :]
        view.take(self._index[: len(self.taps) * m], out=out[: len(self.taps) * m], mode="clip")

    def advance(self, m: int) -> None:
        self.head += m

    def clear(self) -> None:
        self.rows.fill(0.0)
        self.head = self.reach

    def _lay_out_index(self, m: int) -> None:
        # Tap t reads row r at head - d + j, j < m: in the flat view that starts reach frames
        # before the head, r * pitch + reach - d + j.
        index = self._index
        for t, (row, delay) in enumerate(self.taps):
            np.add(self._ramp[:m], row * self.pitch + self.reach - delay, out=index[t * m : (t + 1) * m])
        self._index_frames = m


def _hadamard(n: int) -> np.ndarray:
    matrix = np.ones((1, 1))
    while matrix.shape[0] < n:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def _distinct_primes(lengths: list[float]) -> list[int]:
    """The nearest unused prime at or above each length (primes are mutually prime)."""
    taken: set[int] = set()
    out = []
    for length in lengths:
        candidate = max(2, int(round(length)))
        while candidate in taken or any(candidate % p == 0 for p in range(2, math.isqrt(candidate) + 1)):
            candidate += 1
        taken.add(candidate)
        out.append(candidate)
    return out


class Reverb:
    """A stereo hall reverb: a three-stage input diffuser feeding an 8-line feedback delay network.

    * **Diffuser.** The stereo input is spread over 8 channels; each of three stages delays
      every channel by its own time inside a 5, 11 and 23 ms span and mixes the channels with
      a signed, shuffled Hadamard matrix. One input click leaves as 512 echoes within 40 ms,
      so the onset is dense, not a flutter.
    * **Network.** 8 delay lines of 31-71 ms (distinct primes, so their echoes rarely coincide)
      fed back through a Hadamard matrix (orthogonal: it moves energy between lines and loses
      none). Each line's two-tap FIR sets its loop gain so every line decays by 60 dB in
      ``time`` seconds at low frequencies and, with ``damping``, faster towards high ones.
    * **Output.** Left and right read the lines (and the diffuser, for the early part) with
      two orthogonal sign patterns, so they are uncorrelated; ``width`` blends them. The wet
      sound starts ``PREDELAY_MS`` after its input.
    * **Chunks.** The network runs in chunks of one fixed length (``chunk``, at most the
      pre-delay), whatever blocks the caller hands it: input waits in a buffer until a chunk is
      full, and the pre-delay covers the wait, so nothing comes out late. A fixed length means
      the gathers' indexes are laid out once; live play picks a chunk as long as its audio
      callback, so every callback does the same work.

    Args:
        sample_rate: frames per second.
        block_size: the largest block :meth:`process` is given.
        time: RT60 in seconds (low frequencies).
        damping: 0..1, see :class:`EffectsSettings`.
        width: 0..1 stereo width.
        level: wet gain (0: silent; the reverb goes idle once its tail has faded).
        chunk: frames per step of the network (default and upper bound: the pre-delay, the
            shortest loop and ``CHUNK_MAX``, whichever is least).

    Example::

        reverb = Reverb(48000, 512, time=2.0)
        reverb.process(send, out, 512)   # send, out: float32 [2, >= 512]; adds the wet signal to out
    """

    def __init__(self, sample_rate: int, block_size: int, time: float = 1.8, damping: float = 0.5,
                 width: float = 1.0, level: float = 1.0, chunk: int | None = None) -> None:  # fmt: skip
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        n = REVERB_LINES
        # Tap spacing of the loop FIRs: one frame up to 48 kHz, more above, so the damping acts
        # on the same frequencies at any rate.
        self._spacing = max(1, round(self.sample_rate / 48000))
        self.delays = _distinct_primes([ms * self.sample_rate / 1000 for ms in LINE_MS])
        self.predelay = int(round(PREDELAY_MS * self.sample_rate / 1000))
        # Chunks no longer than the pre-delay (so the wet output is always ready in time), the
        # shortest loop (so a chunk never needs its own output) and CHUNK_MAX.
        longest_chunk = min(self.predelay, min(self.delays), CHUNK_MAX)
        self.chunk = longest_chunk if chunk is None else max(1, min(int(chunk), longest_chunk))
        m = self.chunk
        rng = np.random.default_rng(91)  # fixed: the same room every run
        self._diffusers: list[_DelayRows] = []
        self._stage_mix: list[np.ndarray] = []
        # The stereo input goes to alternate channels with alternating signs, energy kept.
        input_gain = np.array([math.sqrt(2 / n) * (1 if (i // 2) % 2 == 0 else -1) for i in range(n)])
        for stage, span_ms in enumerate(DIFFUSER_MS):
            span = span_ms * self.sample_rate / 1000
            taps = [(i & 1 if stage == 0 else i, int(span * (i + rng.uniform(0.1, 0.9)) / n)) for i in range(n)]
            self._diffusers.append(_DelayRows(2 if stage == 0 else n, taps, m))
            mix = _hadamard(n)[rng.permutation(n)] * rng.choice([-1.0, 1.0], n) / math.sqrt(n)
            if stage == 0:
                mix = mix * input_gain
            self._stage_mix.append(mix.astype(np.float32))
        k = self._spacing
        self._lines = _DelayRows(n, [(i, d) for i, d in enumerate(self.delays)]
                                 + [(i, d + k) for i, d in enumerate(self.delays)], m)  # fmt: skip
        self._feedback = _hadamard(n) / math.sqrt(n)
        # Output sign patterns: two rows of a Hadamard matrix each, for the network and the diffuser.
        self._late_taps = _hadamard(n)[rng.permutation(n)[:2]] * rng.choice([-1.0, 1.0], n) / math.sqrt(n)
        self._early_taps = _hadamard(n)[rng.permutation(n)[:2]] * rng.choice([-1.0, 1.0], n) / math.sqrt(n)
        # One product does a chunk: rows 0-1 are the wet output, rows 2.. the lines' next input;
        # columns are the lines' outputs, the same outputs k frames earlier (the FIR's second
        # tap), then the last diffuser stage's channels. The FIR's coefficients and that
        # stage's mix are folded in.
        self._matrix = np.zeros((n + 2, 3 * n), np.float32)
        self._tap_now = [0.0] * n
        self._tap_before = [0.0] * n
        # Every step is one chunk long, so its scratch is laid out once: 1-D for the gathers, 2-D
        # views of the same memory for the products.
        self._stack = np.zeros(3 * n * m, np.float32)  # the lines, their FIR taps, the diffused input
        self._stack_2d = self._stack.reshape(3 * n, m)
        self._diffused = self._stack[2 * n * m :]
        self._result = np.zeros((n + 2, m), np.float32)
        self._feedback_rows = self._result[2:]
        self._wet_rows = self._result[:2]
        self._channels = np.zeros((n, m), np.float32)
        self._gathered = np.zeros(n * m, np.float32)
        self._gathered_2d = self._gathered.reshape(n, m)
        # Input not yet processed, and wet output not yet played (the pre-delay's worth and more):
        # linear buffers, moved back to their start when full.
        self._input = np.zeros((2, 2 * (self.block_size + m) + 8192), np.float32)
        self._output = np.zeros((2, self.predelay + 2 * (self.block_size + m) + 8192), np.float32)
        self._in_read = self._in_write = self._out_read = self._out_write = 0
        self._ramp = np.arange(1, self.block_size + 1, dtype=np.float32)
        self._curve = np.zeros(self.block_size, np.float32)
        self._silence = np.zeros((2, self.block_size), np.float32)
        self._longest_path = sum(d.reach for d in self._diffusers) + self._lines.reach
        self._quiet_frames = 0
        self._unchecked = 0
        self._fading = False
        self.idle = True
        self.level = float(level)
        self._applied_level = float(level)
        self.time = float(time)
        self.damping = float(damping)
        self.width = float(width)
        self._update_matrix()

    # ------------------------------------------------------------------ parameters (audio thread safe)

    def set_time(self, time: float) -> None:
        """Set the RT60 in seconds (allocates no arrays; safe between blocks)."""
        self.time = float(time)
        self._update_loop_gains()

    def set_damping(self, damping: float) -> None:
        """Set the damping 0..1 (allocates no arrays)."""
        self.damping = float(damping)
        self._update_loop_gains()

    def set_width(self, width: float) -> None:
        """Set the stereo width 0..1 (allocates no arrays)."""
        self.width = float(width)
        self._update_matrix()

    def _update_matrix(self) -> None:
        """Fill the network's matrix: what each row takes from the lines and from the diffuser
        (from the width), then the lines' columns scaled by their FIR taps (Python floats only)."""
        n = REVERB_LINES
        same, cross = (1.0 + self.width) / 2.0, (1.0 - self.width) / 2.0
        late_gain = REVERB_OUTPUT_GAIN * math.sqrt(1.0 - EARLY_SHARE)
        early_gain = REVERB_OUTPUT_GAIN * math.sqrt(EARLY_SHARE)
        late, early = self._late_taps, self._early_taps
        last_mix = self._stage_mix[-1]
        self._line_weights = []
        for row in range(n + 2):
            if row < 2:
                side, other = row, 1 - row
                lines = [late_gain * (same * late[side, i] + cross * late[other, i]) for i in range(n)]
                diffused = [early_gain * (same * early[side, i] + cross * early[other, i]) for i in range(n)]
            else:
                lines = [float(self._feedback[row - 2, i]) for i in range(n)]
                diffused = [1.0 if row - 2 == i else 0.0 for i in range(n)]
            self._line_weights.append(lines)
            for i in range(n):  # the last diffuser stage's mix, folded in
                self._matrix[row, 2 * n + i] = sum(diffused[c] * float(last_mix[c, i]) for c in range(n))
        self._update_loop_gains()

    def _update_loop_gains(self) -> None:
        """Set the FIR taps from time and damping into the matrix's line columns.

        Line ``i``, ``d`` frames long (plus half the FIR's spacing ``k``, its delay at low
        frequencies), needs a loop gain ``g = 10 ** (-3 d / (rate * time))`` to fall 60 dB in
        ``time``. Its FIR ``b x[t] + a x[t - k]`` has gain ``a + b`` at DC and ``b - a`` at
        ``rate / 2k`` (the top of the band up to 48 kHz); both are set from the RT60 wanted
        there, ``time`` at DC and ``time * (1 - 0.9 * damping)`` at the top, so every line falls
        at the same rate at both ends; in between, the squared gain follows a cosine.
        """
        n = REVERB_LINES
        rate, k = self.sample_rate, self._spacing
        top_time = self.time * (1.0 - 0.9 * self.damping)
        now, before = self._tap_now, self._tap_before
        for i, d in enumerate(self.delays):
            loop = d + k / 2
            low = 10.0 ** (-3.0 * loop / (rate * self.time))
            high = 10.0 ** (-3.0 * loop / (rate * top_time))
            now[i] = (low + high) / 2.0
            before[i] = (low - high) / 2.0
        matrix = self._matrix
        for row, weights in enumerate(self._line_weights):
            for i in range(n):
                matrix[row, i] = weights[i] * now[i]
                matrix[row, n + i] = weights[i] * before[i]

    def clear(self) -> None:
        """Silence the tail at once and go idle (reset)."""
        for rows in (*self._diffusers, self._lines):
            rows.clear()
        self._quiet_frames = 0
        self._fading = False
        self.idle = True

    def fade_out(self) -> None:
        """Fade the tail out over the next :meth:`process` call, then clear (all sound off)."""
        self._fading = not self.idle

    # ------------------------------------------------------------------ audio

    def process(self, send: np.ndarray | None, out: np.ndarray, frames: int) -> None:
        """Add the reverb of ``send[:, :frames]`` to ``out[:, :frames]``.

        Args:
            send: float32 ``[2, >= frames]`` input, or ``None`` for silence.
            out: float32 ``[2, >= frames]``, added to.
            frames: at most ``block_size``.
        """
        if self.idle:
            if send is None or _quiet(send, frames):
                self._applied_level = self.level
                return
            self._wake()
        self._take_input(self._silence if send is None else send, frames)
        m = self.chunk
        while self._in_write - self._in_read >= m:
            self._step(self._input[:, self._in_read : self._in_read + m], m)
            self._in_read += m
        wet = self._output[:, self._out_read : self._out_read + frames]
        self._out_read += frames
        level, start = (0.0 if self._fading else self.level), self._applied_level
        if start == level:
            if level != 1.0:
                wet *= np.float32(level)
        else:
            curve = self._curve[:frames]
            np.multiply(self._ramp[:frames], np.float32((level - start) / frames), out=curve)
            curve += np.float32(start)
            wet[0] *= curve  # row by row: a broadcast curve would make numpy buffer
            wet[1] *= curve
        out[0, :frames] += wet[0]  # row by row: numpy buffers 2-D operands of unlike layouts
        out[1, :frames] += wet[1]
        self._applied_level = level
        if self._fading:
            self.clear()
            self._applied_level = self.level
            return
        # The idle check looks at one block every IDLE_CHECK_FRAMES: a tail decays smoothly over
        # seconds, and input between two looks is heard at the next one.
        self._unchecked += frames
        if self._unchecked < IDLE_CHECK_FRAMES:
            return
        if not _quiet(wet, frames) or (send is not None and not _quiet(send, frames)):
            self._quiet_frames = 0
        else:
            self._quiet_frames += self._unchecked
            if self._quiet_frames >= self._longest_path + self.predelay:
                # Below -140 dBFS in and out for longer than any path through the reverb: stop
                # before the tail decays into denormals (the state is zeroed, so it never will).
                self.clear()
        self._unchecked = 0

    def _wake(self) -> None:
        # The state is silent; restart the buffers with a pre-delay of silence ahead of the output.
        self._in_read = self._in_write = self._out_read = 0
        self._out_write = self.predelay
        self._output[:, : self.predelay] = 0.0
        self._quiet_frames = 0
        self.idle = False

    def _take_input(self, send: np.ndarray, frames: int) -> None:
        if self._in_write + frames > self._input.shape[1]:
            _move_to_start(self._input, self._in_read, self._in_write)
            self._in_write -= self._in_read
            self._in_read = 0
        np.copyto(self._input[:, self._in_write : self._in_write + frames], send[:, :frames])
        self._in_write += frames

    def _step(self, send: np.ndarray, m: int) -> None:
        """One chunk (``m`` = ``self.chunk`` frames) through the reverb; its wet output goes to the output buffer."""
        # Diffuser: each stage stores its input, gathers every channel at its own delay and mixes
        # them; the last stage's gathered channels go to the stack's third part unmixed (its mix
        # is folded into the network's matrix).
        first, second, third = self._diffusers
        gathered, channels = self._gathered, self._channels
        first.write(send)
        first.gather(m, gathered)
        first.advance(m)
        np.matmul(self._stage_mix[0], self._gathered_2d, out=channels)
        second.write(channels)
        second.gather(m, gathered)
        second.advance(m)
        np.matmul(self._stage_mix[1], self._gathered_2d, out=channels)
        third.write(channels)
        third.gather(m, self._diffused)
        third.advance(m)
        # Network: the lines' outputs and their FIR taps, then one product for everything.
        lines = self._lines
        lines.gather(m, self._stack)
        np.matmul(self._matrix, self._stack_2d, out=self._result)
        lines.write(self._feedback_rows)
        lines.advance(m)
        if self._out_write + m > self._output.shape[1]:
            _move_to_start(self._output, self._out_read, self._out_write)
            self._out_write -= self._out_read
            self._out_read = 0
        np.copyto(self._output[:, self._out_write : self._out_write + m], self._wet_rows)
        self._out_write += m


def _move_to_start(buffer: np.ndarray, start: int, stop: int) -> None:
    """Move ``buffer[:, start:stop]`` to the start, row by row (numpy cannot prove 2-D views disjoint
    and would copy through a temporary)."""
    for row in buffer:
        row[: stop - start] = row[start:stop]


def _quiet(stereo: np.ndarray, frames: int) -> bool:
    """Whether ``stereo[:, :frames]`` stays under :data:`QUIET` in RMS (two 1-D dot products: no buffers)."""
    left, right = stereo[0, :frames], stereo[1, :frames]
    return float(np.dot(left, left)) + float(np.dot(right, right)) <= 2 * frames * QUIET * QUIET


class Chorus:
    """A stereo chorus: four voices, each the input read through a delay that an LFO sweeps.

    Each voice reads its own side (two left, two right, so a panned instrument's chorus stays
    where it is) at a fractional delay of 13-20 ms swinging by ``CHORUS_DEPTH_MS`` at 0.29-0.43
    Hz (linear interpolation). The voices' different delays, rates and phases make the copies
    drift against each other and against the dry signal. No feedback: the chorus goes idle
    (costs nothing) once its input has been silent for its longest delay.

    The LFOs are slow, so over a piece of at most ``CHORUS_PIECE`` frames each voice's delay
    moves along a straight line from its sine's value at the start to its value at the end;
    all voices' read positions for a piece are then one ``[voices, 2] @ [2, m]`` product.

    Args:
        sample_rate: frames per second.
        block_size: the largest block :meth:`process` is given.
        level: wet gain (1.0: each side's wet signal is about as loud as its input).
    """

    def __init__(self, sample_rate: int, block_size: int, level: float = 1.0) -> None:
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        m = min(self.block_size, CHORUS_PIECE)
        voices = len(CHORUS_VOICES)
        self._voices = voices
        ms = self.sample_rate / 1000
        self._depth = CHORUS_DEPTH_MS * ms
        self._centre = [v[1] * ms for v in CHORUS_VOICES]
        self._history = int(math.ceil(max(self._centre) + self._depth)) + 2
        # Short rows, so read positions (row offset included) stay under 16384 up to 48 kHz and float32 keeps
        # their fraction to a thousandth of a frame.
        self._rows = _DelayRows(2, [], self.block_size, reach=self._history, slack=2 * self._history)
        self._flat = self._rows.flat
        self._left_voices = sum(1 for v in CHORUS_VOICES if v[0] == 0)
        self._omega = [2 * math.pi * v[2] / self.sample_rate for v in CHORUS_VOICES]
        self._phase = [2 * math.pi * v[3] for v in CHORUS_VOICES]
        self._line = np.zeros((voices, 2), np.float32)  # per voice: read position at frame 0, step per frame
        self._frames = np.stack([np.ones(m), np.arange(m)]).astype(np.float32)
        self._mix = np.zeros((2, voices), np.float32)
        for index, voice in enumerate(CHORUS_VOICES):
            side = voice[0]
            self._mix[side, index] = 1.0 / math.sqrt(self._left_voices if side == 0 else voices - self._left_voices)
        self._position = np.zeros(voices * m, np.float32)
        self._whole = np.zeros(voices * m, np.float32)
        self._index = np.zeros(2 * voices * m, np.intp)  # each read's frame, then the frame after it
        self._taps = np.zeros(2 * voices * m, np.float32)
        self._wet = np.zeros(2 * m, np.float32)
        self._ramp = np.arange(1, self.block_size + 1, dtype=np.float32)
        self._curve = np.zeros(self.block_size, np.float32)
        self._silence = np.zeros((2, self.block_size), np.float32)
        self._quiet_frames = self._history
        self._fading = False
        self.idle = True
        self.level = float(level)
        self._applied_level = float(level)

    def clear(self) -> None:
        """Forget the input at once and go idle (reset)."""
        self._rows.clear()
        self._quiet_frames = self._history
        self._fading = False
        self.idle = True

    def fade_out(self) -> None:
        """Fade the output out over the next :meth:`process` call, then clear (all sound off)."""
        self._fading = not self.idle

    def process(self, send: np.ndarray | None, out: np.ndarray, frames: int) -> None:
        """Add the chorus of ``send[:, :frames]`` to ``out[:, :frames]``.

        Args:
            send: float32 ``[2, >= frames]`` input, or ``None`` for silence.
            out: float32 ``[2, >= frames]``, added to.
            frames: at most ``block_size``.
        """
        level, start_level = (0.0 if self._fading else self.level), self._applied_level
        self._applied_level = level
        if self._fading:
            self._fading = False
            self._process(send, out, frames, start_level, 0.0)
            self.clear()
            self._applied_level = self.level
            return
        if send is None:  # (input that is sent counts as sound: without feedback, zeros stay zeros)
            if self.idle:
                return
            # Every voice reads at most `history` frames back: after that much silence, so is the output.
            if self._quiet_frames >= self._history:
                self.idle = True
                return
            self._quiet_frames += frames
        else:
            self._quiet_frames = 0
            self.idle = False
        self._process(send, out, frames, start_level, level)

    def _process(self, send: np.ndarray | None, out: np.ndarray, frames: int, start_level: float,
                 level: float) -> None:  # fmt: skip
        rows = self._rows
        rows.write(self._silence[:, :frames] if send is None else send[:, :frames])
        done = 0
        while done < frames:
            m = min(frames - done, CHORUS_PIECE)
            wet = self._piece(rows.head + done, m)
            if start_level == level:
                if level != 1.0:
                    wet *= np.float32(level)
            else:
                curve = self._curve[:m]
                np.multiply(self._ramp[done : done + m], np.float32((level - start_level) / frames), out=curve)
                curve += np.float32(start_level)
                wet[0] *= curve  # row by row: a broadcast curve would make numpy buffer
                wet[1] *= curve
            out[0, done : done + m] += wet[0]  # row by row: numpy buffers 2-D operands of unlike layouts
            out[1, done : done + m] += wet[1]
            done += m
        rows.advance(frames)

    def _piece(self, start: int, m: int) -> np.ndarray:
        """The wet ``[2, m]`` for frames ``start ..`` of the input rows (within the block just written)."""
        voices, line = self._voices, self._line
        pitch = self._rows.pitch
        for v, voice in enumerate(CHORUS_VOICES):
            phase, omega = self._phase[v], self._omega[v]
            delay_start = self._centre[v] + self._depth * math.sin(phase)
            delay_end = self._centre[v] + self._depth * math.sin(phase + omega * m)
            line[v, 0] = voice[0] * pitch + start - delay_start  # in the flat buffer: its side's row
            line[v, 1] = 1.0 - (delay_end - delay_start) / m
            self._phase[v] = (phase + omega * m) % (2 * math.pi)
        reads = voices * m
        position, whole = self._position[:reads], self._whole[:reads]
        np.matmul(line, self._frames[:, :m], out=position.reshape(voices, m))
        # The frame each read follows and its fraction (floor and subtract: numpy's modf is
        # several times slower). Positions are never negative.
        np.floor(position, out=whole)
        position -= whole
        index = self._index[: 2 * reads]
        np.copyto(index[:reads], whole, casting="unsafe")
        np.add(index[:reads], 1, out=index[reads:])
        both = self._taps[: 2 * reads]
        self._flat.take(index, out=both, mode="clip")
        taps, following = both[:reads], both[reads:]
        following -= taps  # linear interpolation: taps + fraction * (next - taps)
        following *= position
        taps += following
        wet = self._wet[: 2 * m].reshape(2, m)
        np.matmul(self._mix, taps.reshape(voices, m), out=wet)
        return wet


# ---------------------------------------------------------------------- measuring the reverb


def impulse_response(reverb: Reverb, seconds: float, block: int = 512) -> np.ndarray:
    """The reverb's answer to one full-scale click: float32 ``[2, seconds * rate]`` (for tests and
    ``tools/measure_reverb.py``; it allocates, so never call it on the audio thread)."""
    frames = int(seconds * reverb.sample_rate)
    out = np.zeros((2, frames), np.float32)
    send = np.zeros((2, block), np.float32)
    for start in range(0, frames, block):
        n = min(block, frames - start)
        send[:, 0] = 1.0 if start == 0 else 0.0
        reverb.process(send, out[:, start : start + n], n)
    return out


def decay_time(x: np.ndarray, rate: int, band: tuple[float, float] | None = None) -> float:
    """RT60 in seconds of ``x`` ``[2, n]`` as a room acoustician measures it: Schroeder backward
    integration (optionally of one band, 4th-order Butterworth, Hz), a line fitted to the decay
    curve from -5 to -35 dB, extrapolated to 60 dB."""
    x = np.asarray(x, np.float64)
    if band is not None:
        from scipy.signal import butter, sosfilt  # only here: scipy takes a while to import

        x = sosfilt(butter(4, band, btype="band", fs=rate, output="sos"), x, axis=1)
    energy = np.cumsum(np.square(x).sum(axis=0)[::-1])[::-1]
    curve = 10 * np.log10(energy / energy[0] + 1e-300)
    first, last = int(np.argmax(curve < -5)), int(np.argmax(curve < -35))
    return -60.0 / np.polyfit(np.arange(first, last) / rate, curve[first:last], 1)[0]
