"""``python -m pugfast.bench``: the same as ``pugfast bench``."""

import argparse
import sys

from . import DESCRIPTION, add_arguments, main

parser = argparse.ArgumentParser(prog="pugfast bench", description=DESCRIPTION)
add_arguments(parser)
sys.exit(main(parser.parse_args()))
