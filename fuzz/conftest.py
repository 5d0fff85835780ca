"""Hypothesis profiles for the fuzz suite, chosen by ``TRIOFLOW_FUZZ_PROFILE``.

* ``dev`` (the default): a quick look, a few dozen examples per property.
* ``long`` (``nox -s fuzz``): enough examples per property for well over
  10 000 in all, in a few minutes on two cores.

Failing examples are saved as replayable JSON in ``fuzz/failures/`` (see
``engine_properties.saved_on_failure``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}

settings.register_profile("dev", max_examples=50, **_COMMON)
settings.register_profile("long", max_examples=1500, **_COMMON)
settings.load_profile(os.environ.get("TRIOFLOW_FUZZ_PROFILE", "dev"))
