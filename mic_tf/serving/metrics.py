"""Prometheus metrics of the service (one registry per app, so tests can run several apps).

With `serve --workers=N`, $PROMETHEUS_MULTIPROC_DIR is set before the workers start: every
worker writes its values to files there and `/metrics`, whichever worker answers it, renders
the sum over the workers (counters, histograms) and each live worker's `mic_bundle_info` (with
a `pid` label), prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import contextlib
import os
import time

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest, multiprocess)

disable_created_metrics()  # no `_created` series: they double the output and nobody reads them

# 0.25 ms .. 2.5 s: the stages sit around a millisecond, the slow tail in tens.
BUCKETS = (.00025, .0005, .001, .0025, .005, .0075, .01, .015, .025, .05, .1, .25, .5, 1.0, 2.5)
STAGES = ("redis", "tower", "faiss", "score")


class Metrics:
    """Requests, latency histograms (per route and per stage), Redis errors, degraded and
    fallback answers, events, reloads and the bundle version."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("mic_http_requests", "HTTP requests by route and status code.",
                                ["route", "code"], registry=r)
        self.latency = Histogram("mic_http_request_duration_seconds",
                                 "Time in the app per request, by route.", ["route"],
                                 buckets=BUCKETS, registry=r)
        self.stage = Histogram("mic_recommend_stage_seconds",
                               "Time of each recommend stage (redis: both round trips; faiss: "
                               "U2I and, when needed, the similar-user search).", ["stage"],
                               buckets=BUCKETS, registry=r)
        self.redis_errors = Counter("mic_redis_errors", "Failed or timed-out Redis calls.",
                                    ["error"], registry=r)
        self.degraded = Counter("mic_degraded_responses",
                                "Recommendations answered without some channel.", ["channel"],
                                registry=r)
        self.fallback = Counter("mic_fallback_responses",
                                "Recommendations answered by popularity (no history).",
                                registry=r)
        self.events = Counter("mic_events", "Click events by result.", ["result"], registry=r)
        self.reloads = Counter("mic_bundle_reloads", "Bundle reloads by result.", ["result"],
                               registry=r)
        self.bundle = Gauge("mic_bundle_info", "1 for the bundle version being served.",
                            ["version"], registry=r, multiprocess_mode="liveall")
        self._version = None
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

    def set_version(self, version: str) -> None:
        if self._version is not None:
            if self.multiprocess_dir:  # its file keeps the series: 0 = served no more
                self.bundle.labels(self._version).set(0)
            else:
                self.bundle.remove(self._version)
        self.bundle.labels(version).set(1)
        self._version = version

    def redis_error(self, exc: Exception) -> None:
        self.redis_errors.labels(type(exc).__name__).inc()

    def observe_stages(self, timings_ms: dict) -> None:
        for name in STAGES:
            if name in timings_ms:
                self.stage.labels(name).observe(timings_ms[name] / 1000)

    def render(self) -> bytes:
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def process_exit(self, pid: int | None = None) -> None:
        """A worker's last call (or, for a killed worker `pid`, a live one's): its
        `mic_bundle_info` leaves the live series; its counts stay in the sums."""
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(pid or os.getpid(), self.multiprocess_dir)


class Stages:
    """Wall time per named stage, in ms (a stage entered twice adds up)."""

    def __init__(self):
        self.ms: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t) * 1000

    def total(self) -> dict:
        out = {k: round(v, 3) for k, v in self.ms.items()}
        out["total"] = round((time.perf_counter() - self._start) * 1000, 3)
        return out
