"""A pytest plugin for runs under qemu-user-static: Hypothesis without its timing checks.

    python -m pytest -p emulated_hypothesis ...     (with scripts/ on sys.path)

Under emulation every instruction costs ten to twenty times what it does natively, so
Hypothesis's too_slow health check (input generation slower than it likes) and its per-example
deadline measure the emulator, not the code. This turns both off for the whole run; every
example is still generated and every assertion still made. scripts/test_installed_wheel.sh
loads it with --qemu.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("emulated", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("emulated")
