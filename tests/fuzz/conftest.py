"""Hypothesis profiles of the fuzz harness (tests/fuzz, issue 23).

- ``ci`` (the default, what ``make test`` runs): derandomized, so every run tries the same examples and
  CI is deterministic; 700 to 1400 examples per test (each test's ``examples(N)``), about 60 s for the
  whole folder on two cores from a warm numba cache. No example database is written.
- ``long`` (``make fuzz``): random examples, many of them (``FUZZ_EXAMPLES`` per test, 2000 by default),
  failures saved in ``.hypothesis/`` and replayed first on the next run.

Pick one with ``HYPOTHESIS_PROFILE=long``; ``FUZZ_SCALE`` multiplies the ``ci`` profile's counts.
``FUZZ_REASONS=1`` with ``--hypothesis-show-statistics`` lists the errors the inputs were refused with
(how far the mutations get), beside the share of examples that reached Forward, a step or a restore.
"""

import os

from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture]

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=_SLOW_OK, max_examples=100)
settings.register_profile("long", derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=_SLOW_OK,
                          max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

