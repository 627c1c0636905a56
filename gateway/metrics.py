"""The gateway's Prometheus metrics (prometheus_client, one registry per gateway):

- `lesionseg_gateway_instances_received_total`, `lesionseg_gateway_received_bytes_total`
- `lesionseg_gateway_series_received_total` (series called complete)
- `lesionseg_gateway_stage_seconds{stage}`: receive (first to last instance of a series),
  segment, send, total (first instance in → last result sent)
- `lesionseg_gateway_failures_total{stage}`: route, segment, send
- `lesionseg_gateway_associations_rejected_total`
- `lesionseg_gateway_spool_bytes`, `lesionseg_gateway_jobs{state}` (read at scrape time)
"""

from __future__ import annotations

BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class GatewayMetrics:
    def __init__(self, gateway) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from lesionseg.gateway.journal import STATES

        self.registry = CollectorRegistry()
        prefix = "lesionseg_gateway_"
        self.instances = Counter(prefix + "instances_received", "DICOM instances stored in the spool", registry=self.registry)
        self.bytes = Counter(prefix + "received_bytes", "bytes of DICOM instances stored", registry=self.registry)
        self.series = Counter(prefix + "series_received", "series called complete (quiet for the stable age)", registry=self.registry)
        self.stage = Histogram(prefix + "stage_seconds", "seconds per stage of a series", ["stage"], buckets=BUCKETS,
                               registry=self.registry)
        self.failures = Counter(prefix + "failures", "failed series or deliveries, by stage", ["stage"], registry=self.registry)
        self.rejected = Counter(prefix + "associations_rejected", "associations refused (AE title, host, disk)",
                                registry=self.registry)
        Gauge(prefix + "spool_bytes", "bytes in the spool folder", registry=self.registry).set_function(gateway.spool.used_bytes)
        jobs = Gauge(prefix + "jobs", "series in the journal, by state", ["state"], registry=self.registry)
        for state in STATES:
            jobs.labels(state=state).set_function(lambda state=state: gateway.journal.counts().get(state, 0))
        self._server = None

    def instance(self, series_uid: str, size: int) -> None:
        self.instances.inc()
        self.bytes.inc(size)

    def series_complete(self, job) -> None:
        self.series.inc()
        self.stage.labels(stage="receive").observe(max(job.last_received - job.first_received, 0.0))

    def serve(self, port: int, host: str) -> None:
        """Serve /metrics on `host`:`port` (the gateway's configured host, as its DICOM listener)."""
        from prometheus_client import start_http_server

        self._server = start_http_server(int(port), addr=host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            self._server = None
