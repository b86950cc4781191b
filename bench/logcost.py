"""What the access log costs: GET /file/{id}/ with the default settings, without the log, and trivially.

The same load runs, interleaved, against the service with its default settings
(log_level INFO: one access line a request), a second service with
log_level WARNING (no access lines), and the trivial aiohttp handler. Besides
requests a second, each server's own CPU time per request is read from
/proc: the load generator shares the machine, and CPU per request is what a
line costs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .load import LoadSpec, get_load
from .report import Row, median

MIN_RPS_VS_TRIVIAL = 0.8


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    pid: int


@dataclass
class Measured:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (its threads included), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_log_cost(targets: list[Target], spec: LoadSpec, runs: int) -> dict[str, Measured]:
    measured = {target.name: Measured() for target in targets}
    for _ in range(runs):
        for target in targets:
            await get_load(target.url, LoadSpec(duration_s=spec.warmup_s))  # warm, uncounted
            before = cpu_seconds(target.pid)
            result = await get_load(target.url, spec)
            used = cpu_seconds(target.pid) - before
            measured[target.name].rps.append(result.rps)
            measured[target.name].cpu_us.append(used / max(1, result.ok) * 1e6)
    return measured


def log_cost_rows(m: dict[str, Measured]) -> list[Row]:
    default, quiet, trivial = m["default"], m["no access log"], m["trivial"]
    rps, quiet_rps, trivial_rps = median(default.rps), median(quiet.rps), median(trivial.rps)
    cpu, quiet_cpu, trivial_cpu = median(default.cpu_us), median(quiet.cpu_us), median(trivial.cpu_us)
    return [
        Row(
            "GET /file/{id}/, default settings (an access line a request) against a trivial handler",
            f"{rps:.0f} req/s",
            f"trivial aiohttp handler: {trivial_rps:.0f} req/s",
            f"{rps / trivial_rps:.2f}x",
            f"≥ {MIN_RPS_VS_TRIVIAL:.1f}x",
            rps / trivial_rps >= MIN_RPS_VS_TRIVIAL,
        ),
        Row(
            "GET /file/{id}/ with the access log against without it (log_level WARNING)",
            f"{rps:.0f} req/s",
            f"without: {quiet_rps:.0f} req/s",
            f"{rps / quiet_rps:.2f}x",
        ),
        Row(
            "Server CPU per GET: default settings / without the access log / trivial handler",
            f"{cpu:.0f} µs",
            f"without the log: {quiet_cpu:.0f} µs; trivial: {trivial_cpu:.0f} µs",
            f"the line: {cpu - quiet_cpu:+.0f} µs; the service's own work: {quiet_cpu - trivial_cpu:+.0f} µs",
        ),
    ]
