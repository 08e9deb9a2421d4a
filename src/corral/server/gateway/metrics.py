"""The gateway's own figures, kept as plain numbers and turned into Prometheus
metrics only when scraped.

``prometheus_client``'s metric objects take a lock and look up a label set on
every update; the gateway updates a handful of figures per request, so it
keeps them in dicts (it runs on one event loop, so no lock is needed) and a
collector (``GatewayCollector``) reads them at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from corral.server.gateway.balancer import Balancer

LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Inference requests last from milliseconds (embeddings) to minutes."""


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out = []
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        """(model, endpoint, status) → count."""
        self.latency: dict[str, _Histogram] = {}
        self.first_token: dict[str, _Histogram] = {}
        self.tokens: dict[tuple[str, str], int] = {}
        """(model, "prompt" | "completion") → count."""
        self.retries: dict[str, int] = {}
        self.stream_events = 0

    def request_done(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        key = (model, endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(model)
        if histogram is None:
            histogram = self.latency[model] = _Histogram()
        histogram.observe(seconds)

    def first_token_after(self, model: str, seconds: float) -> None:
        histogram = self.first_token.get(model)
        if histogram is None:
            histogram = self.first_token[model] = _Histogram()
        histogram.observe(seconds)

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n:
                key = (model, kind)
                self.tokens[key] = self.tokens.get(key, 0) + n

    def retried(self, model: str) -> None:
        self.retries[model] = self.retries.get(model, 0) + 1


class GatewayCollector(Collector):
    """The gateway's metrics for a registry: request counts and latencies of
    this process, and the balancer's view of the instances."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        balancer: Balancer,
        instance_models: Callable[[], dict[int, str]],
    ) -> None:
        self._metrics = metrics
        self._balancer = balancer
        self._instance_models = instance_models

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        m = self._metrics
        requests = CounterMetricFamily(
            "corral_gateway_requests",
            "Inference requests answered, by model, endpoint and HTTP status.",
            labels=["model", "endpoint", "status"],
        )
        for (model, endpoint, status), n in sorted(m.requests.items()):
            requests.add_metric([model, endpoint, str(status)], n)
        yield requests
        for name, doc, histograms in (
            (
                "corral_gateway_request_duration_seconds",
                "Time from a request's arrival to the end of its answer, by model.",
                m.latency,
            ),
            (
                "corral_gateway_time_to_first_token_seconds",
                "Time from a streamed request's arrival to its first event, by model.",
                m.first_token,
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=["model"])
            for model, histogram in sorted(histograms.items()):
                family.add_metric([model], histogram.cumulative(), histogram.total)
            yield family
        tokens = CounterMetricFamily(
            "corral_gateway_tokens",
            "Tokens in (prompt) and out (completion), as the engines counted them, by model.",
            labels=["model", "kind"],
        )
        for (model, kind), n in sorted(m.tokens.items()):
            tokens.add_metric([model, kind], n)
        yield tokens
        retries = CounterMetricFamily(
            "corral_gateway_retries",
            "Requests tried again on another instance after a failed connection, by model.",
            labels=["model"],
        )
        for model, n in sorted(m.retries.items()):
            retries.add_metric([model], n)
        yield retries
        events = CounterMetricFamily(
            "corral_gateway_stream_chunks", "Stream chunks relayed to clients."
        )
        events.add_metric([], m.stream_events)
        yield events
        models = self._instance_models()
        in_flight = GaugeMetricFamily(
            "corral_gateway_in_flight_requests",
            "Requests this gateway process has in flight, by instance.",
            labels=["model", "instance"],
        )
        outstanding = self._balancer.outstanding()
        for iid, model in sorted(models.items()):
            in_flight.add_metric([model, str(iid)], outstanding.get(iid, 0))
        yield in_flight
        out = GaugeMetricFamily(
            "corral_gateway_instances_out_of_rotation",
            "Instances left out after failing repeatedly (1 = out), by instance.",
            labels=["model", "instance"],
        )
        shunned = self._balancer.out_of_rotation()
        for iid, model in sorted(models.items()):
            out.add_metric([model, str(iid)], 1 if iid in shunned else 0)
        yield out
