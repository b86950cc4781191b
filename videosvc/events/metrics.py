"""The service's metrics (prometheus-client), kept by listening to the bus and told by the web layer.

Requests by route template, method and status, with a latency histogram;
video bytes in and out; jobs by outcome and their durations; HLS renditions by outcome and the
time to first playable; the queue and the
running jobs; webhook deliveries and failures; open live streams. Counters move
with the event bus and with each answered request (`observe`); gauges are read
when Prometheus scrapes. Serving them is `web/metrics.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ..store.records import JobState
from .bus import BytesMoved, EventBus, JobEnded, RenditionsEnded

#: Seconds: most requests take milliseconds; uploads and downloads take longer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
JOB_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
#: The methods counted by name; any other is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: From a millisecond (a rename) to an hour (ffmpeg on a long film).
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600, 3600)


class _WebhookCounts(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily(
            "videosvc_webhook_deliveries", "Webhook delivery attempts, by result", labels=["result"]
        )
        for result, count in self._counts().items():
            family.add_metric([result], count)
        yield family


class Metrics:
    def __init__(
        self,
        bus: EventBus,
        queued: Callable[[], int],
        running: Callable[[], int],
        webhooks: Callable[[], dict[str, int]],
        outbox: Callable[[], int],
        streams: Callable[[], int],
    ) -> None:
        """Long: one declaration per metric, each with its help text and labels."""
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "videosvc_http_requests", "HTTP requests, by route template, method and status",
            ["route", "method", "status"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "videosvc_http_request_duration_seconds", "Time to answer, by route template and method",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.video_bytes = Counter(
            "videosvc_video_bytes", "Bytes of video uploaded (in) and downloaded (out)", ["direction"],
            registry=registry,
        )  # fmt: skip
        self.jobs = Counter("videosvc_jobs", "Resize jobs ended, by outcome", ["outcome"], registry=registry)
        self.job_duration = Histogram(
            "videosvc_job_duration_seconds", "Resize jobs, from a worker taking them to their end",
            buckets=JOB_BUCKETS, registry=registry,
        )  # fmt: skip
        self.job_steps = Histogram(
            "videosvc_job_step_seconds",
            "Each step of a resize job that succeeded: queue, start (database), handover (to the"
            " worker and back), spawn (ffmpeg's fork and exec), ffmpeg, verify, fsync, replace, record",
            ["step"], buckets=STEP_BUCKETS, registry=registry,
        )  # fmt: skip
        self.renditions = Counter(
            "videosvc_renditions", "HLS renditions built, by outcome (ready, failed)", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.first_playable = Histogram(
            "videosvc_first_playable_seconds",
            "From an upload's store to its first playable HLS master playlist",
            buckets=STEP_BUCKETS, registry=registry,
        )  # fmt: skip
        Gauge("videosvc_jobs_queued", "Jobs waiting for a worker", registry=registry).set_function(queued)
        Gauge("videosvc_jobs_running", "Jobs on a worker", registry=registry).set_function(running)
        Gauge("videosvc_webhook_backlog", "Webhook deliveries not yet made", registry=registry).set_function(
            outbox
        )
        Gauge("videosvc_live_streams", "Open live streams (SSE)", registry=registry).set_function(streams)
        registry.register(_WebhookCounts(webhooks))
        # Each download and upload counts here: the children looked up once (`labels()` costs more
        # than the counting).
        self._bytes_moved = {direction: self.video_bytes.labels(direction) for direction in ("in", "out")}
        for state in JobState:
            if not state.active:
                self.jobs.labels(state.value)
        bus.subscribe(JobEnded, self._on_job_ended)
        bus.subscribe(BytesMoved, self._on_bytes_moved)
        for outcome in ("ready", "failed"):
            self.renditions.labels(outcome)
        bus.subscribe(RenditionsEnded, self._on_renditions_ended)

    def _on_renditions_ended(self, event: RenditionsEnded) -> None:
        self.renditions.labels("ready").inc(event.ready)
        self.renditions.labels("failed").inc(event.failed)
        if event.first_playable_s is not None:
            self.first_playable.observe(event.first_playable_s)

    def _on_job_ended(self, event: JobEnded) -> None:
        self.jobs.labels(event.state.value).inc()
        if event.elapsed_s:
            self.job_duration.observe(event.elapsed_s)
        for step, seconds in event.steps:
            self.job_steps.labels(step).observe(seconds)

    def _on_bytes_moved(self, event: BytesMoved) -> None:
        self._bytes_moved[event.direction].inc(event.count)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """A request answered: `route` is its template (never the raw path: an id would be a label each)."""
        # Any token is a method to HTTP: a client inventing them must not invent series.
        method = method if method in METHODS else "other"
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # looked up once per key: `labels()` costs more than the counting
            route = key[0]
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
