"""Peak resident memory of a process while a block of code runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType

SAMPLE_INTERVAL_S = 0.02
#: The sampler stops by itself after this long, whatever happens to the block.
MAX_SAMPLING_S = 1800.0


def read_status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since the process started) from /proc, in kB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class RssSampler:
    """`with RssSampler(pid) as rss: ...`, then `rss.growth_mb`.

    A thread samples VmRSS every 20 ms. Sampling can miss a short spike, but
    VmHWM cannot: if it rose during the block, the block's true peak is the
    new VmHWM.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"rss-{pid}", daemon=True)
        self.before_kb = 0
        self.peak_kb = 0
        self._hwm_before_kb = 0
        self._hwm_after_kb = 0

    def __enter__(self) -> RssSampler:
        status = read_status_kb(self._pid)
        self.before_kb = self.peak_kb = status["VmRSS"]
        self._hwm_before_kb = status["VmHWM"]
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        status = read_status_kb(self._pid)
        self._hwm_after_kb = status["VmHWM"]
        self.peak_kb = max(self.peak_kb, status["VmRSS"])
        if self._hwm_after_kb > self._hwm_before_kb:
            self.peak_kb = max(self.peak_kb, self._hwm_after_kb)

    @property
    def growth_mb(self) -> float:
        return (self.peak_kb - self.before_kb) / 1024

    def _sample(self) -> None:
        deadline = time.monotonic() + MAX_SAMPLING_S
        while not self._stop.wait(SAMPLE_INTERVAL_S) and time.monotonic() < deadline:
            try:
                self.peak_kb = max(self.peak_kb, read_status_kb(self._pid)["VmRSS"])
            except (OSError, KeyError):
                return  # the process is gone
