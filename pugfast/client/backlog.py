"""The events a room holds for whoever iterates it, bounded: a consumer that reads slowly (or
never) costs a fixed amount of memory, and learns what it missed from an ``Overflow`` event.

The room's reader task keeps reading the connection whatever the consumer does, so the
relay's pings are answered and the member is never dropped as a slow consumer for being a
slow reader of events. When MAX_PENDING_EVENTS events, or MAX_PENDING_TEXT characters of
message text, already wait, a new event is dropped and counted; the count arrives as
``Overflow(dropped)`` just before the next event that is kept (or as soon as the consumer
has taken everything kept), and before ``Ended``, which is never dropped. No I/O: the room's
reader puts, its iterator takes.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .events import Ended, Event, Message, Overflow

MAX_PENDING_EVENTS = 1024
MAX_PENDING_TEXT = 4 * 1024 * 1024


def _text_size(event: Event) -> int:
    return len(event.text) if isinstance(event, Message) else 0


class Backlog:
    """Events in arrival order, at most MAX_PENDING_EVENTS of them (and MAX_PENDING_TEXT
    characters of text), then ``Ended`` and the end of the iteration."""

    def __init__(self, max_events: int = MAX_PENDING_EVENTS, max_text: int = MAX_PENDING_TEXT) -> None:
        self._max_events = max_events
        self._max_text = max_text
        self._events: deque[Event] = deque()
        self._text = 0
        self._dropped = 0
        self._closed = False
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._events)

    def put(self, event: Event) -> None:
        """Queues ``event``, or drops and counts it when the backlog is full. An ``Ended``
        closes the backlog: it is always kept, and nothing after it."""
        if self._closed:
            return
        final = isinstance(event, Ended)
        size = _text_size(event)
        if not final and (len(self._events) >= self._max_events or self._text + size > self._max_text):
            self._dropped += 1
            return
        if self._dropped:
            self._events.append(Overflow(self._dropped))
            self._dropped = 0
        self._events.append(event)
        self._text += size
        self._closed = final
        self._ready.set()

    async def get(self) -> Event | None:
        """The next event, waiting for one; None once ``Ended`` has been taken."""
        while not self._events:
            if self._dropped:  # all that was kept is taken: say what was not, at once
                dropped, self._dropped = self._dropped, 0
                return Overflow(dropped)
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        event = self._events.popleft()
        self._text -= _text_size(event)
        return event
