"""`make bench`: the chat path's speed and memory, measured on this machine (never asserted in tests).

Entry point: `python -m tests.bench.run` (tests/bench/run.py). Each measurement runs
in its own process with its own database, Redis DB and child processes.
"""
