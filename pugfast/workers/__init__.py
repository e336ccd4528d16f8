"""``pugfast serve --workers N``: one port, N worker processes, every room whole in one of them.

- supervisor.py: starts, restarts and stops the workers, answers their questions, and sums
  their metrics;
- router.py: accepts each connection and sends it to its room's worker;
- channel.py: the messages between the supervisor and a worker, as bytes (no I/O);
- link.py: a worker's end of that channel;
- worker.py: a worker process's entry point.

docs/scaling.md says how it fits together and why.
"""
