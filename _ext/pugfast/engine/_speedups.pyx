# cython: language_level=3
"""The compiled engine: the WebSocket frame codec, the broadcast fan-out, the load generator's
delivery sink, and the check and answer of a room upgrade's request head.

Its pure-Python twin is pugfast/engine/_frames.py, _fanout.py, _sink.py and _head.py (with
pugfast/handshake.py); pugfast/engine/__init__.py picks one of the two. The sources are split by
job into the included files below, so that the codec, the fan-out and the sink share one C
module (the fan-out and the sink read a parsed payload straight out of the parser's buffer,
without a Python object in between).
"""

include "_frames.pxi"
include "_fanout.pxi"
include "_sink.pxi"
include "_head.pxi"
include "_handshake.pxi"
