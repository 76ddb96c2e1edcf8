"""The template repository's own tooling, shared by its tests, its
benchmarks (``bench/``) and its lock script (``scripts/lock.py``).

Installed into the template's ``.venv`` by ``make venv`` (editable), never
copied into a generated project, and importable without pytest: what skips
or fails a test stays in ``tests/``.
"""
