"""limner's benchmarks: run with ``python -m benchmarks`` (or ``make bench``); never part of the tests."""
