"""The runtime conformance kit: one suite of behaviour every runtime plugin must show, run with pytest.

    python -m orchestr.testing RUNTIME [pytest args]

runs the suite (orchestr/testing/suite.py) against the installed runtime RUNTIME, with the kit's pytest plugin
(orchestr/testing/plugin.py) loaded. images.py builds the busybox-static images the kit (and orchestr's own
tests and benchmarks) run, offline.
"""
