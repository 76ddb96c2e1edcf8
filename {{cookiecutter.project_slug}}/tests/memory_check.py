"""Memory growth measured with tracemalloc, and where it came from.

Snapshots leave out tracemalloc's own allocations, the import machinery's
and pytest's (its captured output and log records grow with every test,
not with the code under test), and this module's.
"""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import dataclass

NOT_THE_CODE_UNDER_TEST = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
    tracemalloc.Filter(False, "*/_pytest/*"),
    tracemalloc.Filter(False, "*/pluggy/*"),
    tracemalloc.Filter(False, __file__),
)
TOP_SITES = 15


def snapshot() -> tracemalloc.Snapshot:
    """What is allocated now, garbage collected first: only what is still
    referenced counts."""
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(NOT_THE_CODE_UNDER_TEST)


@dataclass(frozen=True)
class Growth:
    """Net bytes allocated between two snapshots, and the lines that
    allocated the most (``snapshot.compare_to(..., "lineno")``)."""

    bytes: int
    top_sites: tuple[str, ...]

    def report(self) -> str:
        return "\n".join(self.top_sites)


def growth_between(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> Growth:
    stats = after.compare_to(before, "lineno")
    return Growth(
        bytes=sum(stat.size_diff for stat in stats),
        top_sites=tuple(str(stat) for stat in stats[:TOP_SITES]),
    )


def assert_growth_below(growth: Growth, bound: int, what: str) -> None:
    """Fail, printing the top allocation sites, when ``growth`` reaches
    ``bound`` bytes."""
    if growth.bytes >= bound:
        raise AssertionError(
            f"{what}: memory grew by {growth.bytes} bytes, over the bound of "
            f"{bound}; top allocation sites by line:\n{growth.report()}"
        )
