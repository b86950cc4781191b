"""Result rows, small statistics and the Markdown table."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Where every benchmark writes its table (not committed).
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    """One line of the results table; `met` is None for rows without a target."""

    metric: str
    median: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in (0, 100]: always one of the measured values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def render_table(rows: Sequence[Row]) -> str:
    header = ("metric", "median", "baseline", "ratio", "target", "met?")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        met = "—" if row.met is None else ("yes" if row.met else "**NO**")
        cells = (row.metric, row.median, row.baseline, row.ratio, row.target, met)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table, for the sweep."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def progress(message: str) -> None:
    """A timestamped line on stderr: what the benchmark is doing now."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def publish_rows(title: str, details: str, rows: Sequence[Row], name: str, started: float) -> None:
    """A benchmark's page: its title, a line of what was measured (date, commit, load and time
    in all added), the table; printed and kept in bench/results/NAME."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    line = (
        f"{time.strftime('%Y-%m-%d')}, commit {git_head()}, {details}, load average {load} at the end,"
        f" {time.monotonic() - started:.0f} s in all."
    )
    publish("\n".join([f"# {title}", "", line, "", render_table(rows)]), name)


def publish(text: str, name: str) -> None:
    """Print the results and keep them in bench/results/NAME."""
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / name).write_text(text + "\n")
    progress(f"written to {RESULTS_DIR / name}")


#: The checkout the benchmarks run from.
_REPO_ROOT = Path(__file__).resolve().parent.parent


def git_head() -> str:
    """The commit measured, and whether the checkout had changes beside it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO_ROOT, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}" if head else "unknown"
