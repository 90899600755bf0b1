"""Benchmarks (issue 5): each measures a ratio or a count in one run on PostgreSQL, prints its figures
and PASS/FAIL against its target. `python -m bench.run_all` runs them all; results go to RESULTS.md."""
