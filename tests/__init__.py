"""Mollify's test suite, a package so test modules import their helpers (``tests.support``, ...).

``pytest`` puts the repository root on ``sys.path`` (``pythonpath`` in ``pyproject.toml``).
"""
