"""Keeping the cyclic garbage collector's pauses short when many members are joined.

A full collection walks every object the collector tracks, and a joined member holds about
eight (the engine's Connection, its Session and Member, and uvloop's transport with its
buffer list, its cached bound method and its entry in the loop's weak table). With 19,800
members that is some 160,000 objects and a pause of a tenth of a second or more, and
CPython before 3.14 runs a full collection whenever the objects that survived its younger
generations reach a quarter of the old ones: during a join storm, and then every few
thousand joins.

Every object that survives a full collection is live (the collection just freed every
unreachable cycle), so ``FreezeSurvivors`` moves the survivors into the collector's permanent
generation, which no collection walks again (``gc.freeze``); the next full collection walks
only what came since. A frozen object is still freed the moment its last reference goes, so
a member's objects go as they always did: they hold no reference cycle once it has left
(tests/test_collector.py holds them to it, with the collector off). What a freeze could keep
forever is an object frozen live that later ends in a cycle, which is why it happens only
when no task is running: the relay's connections then are WebSockets and front doors, whose
objects are cycle-free, and none of aiohttp's request handlers, whose ends may not be. Where
there always is a task, nothing is frozen and the collector works as usual. And only on
uvloop: the standard library's socket transports end in reference cycles (the collector frees
them), so on ``--event-loop asyncio`` nothing is frozen either.

A freeze bounds every full collection after it, but not the first one after a join storm:
CPython waits until what survived its younger generations is a quarter of the old, and a
storm that starts from a nearly empty relay can join thousands of members before that (at
19,800 members the one full collection walked all 150,000 of their objects, 44 ms of CPU on
this project's test machine). So the collector's steps are kept small: after each collection
of the middle generation (which moves at most some 7,700 survivors into the old one)
``FreezeSurvivors`` asks for a full collection itself, in the next loop iteration, and it
walks only what came since the last freeze: a couple of milliseconds however many members
are joined. Every object is still walked once by a full collection before it is frozen, so
the steps cost no more in all than the one big collection did. It asks only when the freeze
will follow (no task runs); a relay whose objects stop growing makes no middle-generation
collections, and so no steps.

The freeze happens in the collector's own callback, at the end of the full collection: then
the survivors are exactly what is frozen, with nothing made since. The callback does nothing
else that could meet the loop half way through a change: the stepped collection is only
scheduled there (``call_soon``), never run.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any


class FreezeSurvivors:
    """Freezes what survives each full collection while no task runs on ``loop`` but those
    that ran when it was made (the process's own main task), and then asks for a full
    collection after each middle-generation one. ``start``, then ``stop``;
    ``freezes`` counts the freezes, ``steps`` the full collections it asked for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._own = asyncio.all_tasks(loop)
        self._step: asyncio.Handle | None = None
        self.freezes = 0
        self.steps = 0

    @staticmethod
    def suits(loop: asyncio.AbstractEventLoop) -> bool:
        """Whether a connection's objects on ``loop`` are cycle-free once it has ended (see
        above): uvloop's are; the standard library's transports are not."""
        return type(loop).__module__.startswith("uvloop")

    def start(self) -> None:
        gc.callbacks.append(self._collected)

    def stop(self) -> None:
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
        if self._step is not None:
            self._step.cancel()
            self._step = None

    def _idle(self) -> bool:
        return asyncio.all_tasks(self._loop) <= self._own

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop":
            return
        if info["generation"] == 2:
            if self._idle():
                gc.freeze()
                self.freezes += 1
        elif info["generation"] == 1 and self._step is None and self._idle():
            self._step = self._loop.call_soon(self._collect)

    def _collect(self) -> None:
        self._step = None
        if self._idle():
            self.steps += 1
            gc.collect()  # its end, in _collected, freezes the survivors
