"""The loop's timers: a cancelled one lets go of what it would have called.

A worker sets an attempt's timeout when it starts and cancels it when the
attempt ends.  With ``timeout = 1h`` and a thousand tasks a second, cancelled
timers that stayed until they were due would keep millions of finished
attempts in memory.
"""
from __future__ import annotations

import gc
import weakref

from titan.io.loop import Loop


class Attempt:
    """Stands in for what a timeout's callback holds on to."""


def test_cancelled_timers_let_go_of_their_callbacks_and_leave_the_heap() -> None:
    loop = Loop(clock=lambda: 0.0)
    attempts = [Attempt() for _ in range(1000)]
    refs = [weakref.ref(a) for a in attempts]
    timers = [loop.call_later(3600.0, lambda a=a: None) for a in attempts]   # an hour-long timeout each
    kept = loop.call_later(3600.0, lambda: None)
    # When every attempt ends and its timeout is cancelled
    for timer in timers:
        timer.cancel()
    del attempts, timers
    gc.collect()
    # Then none of them is kept alive, and the heap holds little more than the live timer
    assert [r for r in refs if r() is not None] == []
    assert kept in [entry[2] for entry in loop._timers] and len(loop._timers) <= 65


def test_due_timers_still_run_in_order_among_cancelled_ones() -> None:
    now = [0.0]
    loop = Loop(clock=lambda: now[0])
    ran = []
    timers = [loop.call_later(float(n), lambda n=n: ran.append(n)) for n in range(300)]
    for n, timer in enumerate(timers):
        if n % 3:
            timer.cancel()
    timers[0].cancel()
    timers[0].cancel()                # twice: counted once
    now[0] = 1000.0
    loop._run_timers()
    assert ran == [n for n in range(300) if n % 3 == 0 and n != 0]
    assert loop._timers == [] and loop._cancelled == 0
