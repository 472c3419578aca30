"""Prometheus text-format metrics (exposition format 0.0.4) served by ``http.server`` from the stdlib."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Upper bounds (seconds) of the latency histograms.
BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Thread-safe counters and histograms, plus gauges computed at scrape time by ``gauge_fn``."""

    HELP = {
        "uar_node_instances_received_total": ("counter", "Instances stored and acknowledged with Success."),
        "uar_node_instances_refused_total": ("counter", "C-STORE requests answered with a failure status."),
        "uar_node_bytes_received_total": ("counter", "Bytes of stored instances."),
        "uar_node_connections_refused_total": (
            "counter",
            "Connections and PDUs the pre-association guard refused, by reason.",
        ),
        "uar_node_studies_received_total": ("counter", "New studies (calling AE, StudyInstanceUID)."),
        "uar_node_studies_processed_total": ("counter", "Finished app runs by result."),
        "uar_node_srs_produced_total": ("counter", "SR documents produced by the app."),
        "uar_node_studies_by_input_domain_total": (
            "counter",
            "Studies read by the model, by input-domain verdict (in_domain, out_of_domain, unchecked).",
        ),
        "uar_node_exports_total": ("counter", "Delivered SR/PDF instances per destination."),
        "uar_node_export_failures_total": ("counter", "Failed export attempts per destination and kind."),
        "uar_node_queue_depth": ("gauge", "Studies per state in the job queue."),
        "uar_node_deliveries": ("gauge", "Deliveries per state."),
        "uar_node_app_seconds": ("histogram", "Duration of one app run (model inference + SR writing)."),
        "uar_node_study_latency_seconds": (
            "histogram",
            "First instance received to SR confirmed by a destination.",
        ),
    }

    def __init__(self, gauge_fn: Callable[[], dict[str, dict[Labels, float]]] | None = None) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._hist: dict[str, dict[Labels, list[float]]] = {}  # per label set: bucket counts, sum, count
        self.gauge_fn = gauge_fn

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to counter ``name`` with ``labels``."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one observation (seconds) in histogram ``name``."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            h = self._hist.setdefault(name, {}).setdefault(key, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter (0 if never incremented)."""
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format."""
        gauges = self.gauge_fn() if self.gauge_fn else {}
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self.HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    lines += [f"{name}{_fmt(k)} {v:g}" for k, v in self._counters.get(name, {}).items()]
                elif kind == "gauge":
                    lines += [f"{name}{_fmt(k)} {v:g}" for k, v in gauges.get(name, {}).items()]
                else:
                    for k, h in self._hist.get(name, {}).items():
                        for i, bound in enumerate(BUCKETS):
                            lines.append(f"{name}_bucket{_fmt(k + (('le', f'{bound:g}'),))} {h[i]:g}")
                        lines.append(f"{name}_bucket{_fmt(k + (('le', '+Inf'),))} {h[-1]:g}")
                        lines.append(f"{name}_sum{_fmt(k)} {h[-2]:g}")
                        lines.append(f"{name}_count{_fmt(k)} {h[-1]:g}")
        return "\n".join(lines) + "\n"


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_esc(v)}"' for k, v in labels)
    return "{" + body + "}"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """``GET /metrics`` (and ``/healthz``) on ``bind:port`` in a daemon thread."""

    def __init__(self, metrics: Metrics, bind: str, port: int) -> None:
        registry = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                if self.path.split("?")[0] == "/metrics":
                    body = registry.render().encode()
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
                elif self.path == "/healthz":
                    body, ctype = b"ok\n", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                return

        self.httpd = ThreadingHTTPServer((bind, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
