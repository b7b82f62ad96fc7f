"""Scheduling for live play's helper threads: real-time (SCHED_FIFO) when the system allows it.

The audio callback needs the GIL every block. A helper thread that holds the GIL can be
preempted by the kernel in favour of any other busy process, and then the callback waits
for it past the block's deadline (an underflow). Helper threads that run briefly and then
sleep - the control thread, the MIDI poll, the OSC server, the generation worker's pipe
reader - therefore ask for the lowest real-time priority, below JACK's and PortAudio's
audio threads: nothing ordinary preempts them while they hold the GIL, and the audio
thread still preempts them. The model never runs on such a thread. Without the privilege
(CAP_SYS_NICE, or an rtprio limit) they stay ordinary threads.
"""

from __future__ import annotations

import os

#: SCHED_FIFO priority of helper threads (JACK's clients run at about 5 and up).
HELPER_PRIORITY = 1


def prefer_realtime(priority: int = HELPER_PRIORITY) -> bool:
    """Make the calling thread SCHED_FIFO at ``priority`` if allowed; returns whether it is."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread
    except (OSError, ValueError):
        return False
    return True

