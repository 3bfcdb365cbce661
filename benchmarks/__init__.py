"""Mollify's benchmarks: scripts (``python benchmarks/NAME.py``), a package so one can import another."""
