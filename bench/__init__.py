"""Accord's benchmarks (`make bench` / `python -m bench`), outside the test suite; see bench/README.md."""
