"""``python -m pugfast.workers.worker FD``: one worker process of ``pugfast serve --workers N``.

Only the supervisor starts it, with one end of the control channel as descriptor FD. The
worker reads its settings from the supervisor's hello, then runs a relay (pugfast.server)
that listens on nothing and serves the connections the supervisor passes it. It stops as a
single relay does, on SIGTERM, SIGINT or SIGHUP, and when the channel ends (the supervisor is
gone).
"""

from __future__ import annotations

import asyncio
import sys

from ..memory import return_large_buffers
from ..privacy import configure_logging, disable_core_dumps
from ..server import STOP_SIGNALS, Relay, run_on_event_loop
from .link import WorkerLink


def main(argv: list[str]) -> int:
    disable_core_dumps()
    return_large_buffers()
    sys.dont_write_bytecode = True
    settings, link = WorkerLink.from_fd(int(argv[1]))
    configure_logging(settings.log_level)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        relay = Relay(settings, link=link, on_link_lost=stop.set, freeze_survivors=True)
        await relay.start()
        await stop.wait()
        await relay.stop()

    # The supervisor already found the loop it was told to use.
    run_on_event_loop(settings.event_loop, run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
