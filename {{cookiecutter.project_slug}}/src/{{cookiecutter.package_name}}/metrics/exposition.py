"""Read the metrics in Prometheus' text format, from one process or many.

prometheus_client picks its storage when it is imported: with
``PROMETHEUS_MULTIPROC_DIR`` set, every process (each gunicorn worker, for
one) writes its values to files there, and a scrape adds up the files of
all of them, dead ones included, so counts survive worker restarts.
Unset (development, tests), values live in this process's memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared metrics directory, or None in single-process mode."""
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode
    (read afresh on each scrape), else this process's default registry."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    collected = CollectorRegistry()
    MultiProcessCollector(collected, path=directory)
    return collected


def render(accept: str | None) -> tuple[bytes, str]:
    """The metrics and their content type: Prometheus text, or OpenMetrics
    when the scraper asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry()), content_type


def reset_directory(directory: str) -> None:
    """Create the directory, or empty it of the files of an earlier run:
    their processes are gone, and their counts must not carry over."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
