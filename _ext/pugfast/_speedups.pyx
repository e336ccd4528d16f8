# cython: language_level=3
"""The compiled engine: the WebSocket frame codec and the broadcast fan-out.

Its pure-Python twin is pugfast/_frames.py and pugfast/_fanout.py; pugfast/speedups.py picks
one of the two. The sources are split by job into the included files below, so that the codec
and the fan-out share one C module (the fan-out reads a parsed payload straight out of the
parser's buffer, without a Python object in between).
"""

include "_frames.pxi"
include "_fanout.pxi"
