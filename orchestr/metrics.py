"""The controller's Prometheus metrics (prometheus_client, on a registry of its own) and the HTTP server that
serves them at /metrics, with /healthz beside them.

The server is the standard library's, in a thread of its own: a scrape never waits on a reconcile pass.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import OrchestrError

if TYPE_CHECKING:
    from .model import Container

ADDRESS = "127.0.0.1:9377"
# seconds: a pass with nothing to do takes milliseconds, one that pulls an image may take minutes
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.containers = Gauge("orchestr_containers", "Containers orchestr owns, by namespace, service and state",
                                ["namespace", "service", "state"], registry=r)
        self.restarts = Counter("orchestr_restarts", "Restarts of exited containers, by their runtime's policy or "
                                "by the controller", registry=r)
        self.duration = Histogram("orchestr_reconcile_duration_seconds", "How long a reconcile pass took",
                                  buckets=BUCKETS, registry=r)
        self.passes = Counter("orchestr_reconcile_passes", "Reconcile passes, by what started them and whether "
                              "they finished", ["trigger", "result"], registry=r)
        self.actions = Counter("orchestr_plan_actions", "Actions of reconcile plans, by kind and outcome",
                               ["kind", "outcome"], registry=r)
        self.errors = Counter("orchestr_runtime_errors", "Runtime calls or event streams that failed, by runtime",
                              ["runtime"], registry=r)
        self.health = Gauge("orchestr_container_health", "Running containers with health checks, by namespace, "
                            "service and health (starting, healthy, unhealthy)", ["namespace", "service", "health"],
                            registry=r)
        self.liveness = Counter("orchestr_liveness_restarts", "Containers restarted because a liveness check failed",
                                registry=r)
        self.address: str | None = None
        self._server: ThreadingHTTPServer | None = None

    def containers_seen(self, containers: Iterable[Container], loops: Mapping[str, object] = {}) -> None:
        counts = Tally((c.namespace, c.service, "backoff" if c.backing_off or getattr(loops.get(c.id), "waiting",
                                                                                      False) else str(c.state))
                       for c in containers)
        self.containers.clear()
        for labels, n in counts.items():
            self.containers.labels(*labels).set(n)

    def health_seen(self, probers: Mapping[str, tuple]) -> None:
        """probers: container id -> (its start, the Prober that checks it)."""
        counts = Tally((p.container.namespace, p.container.service, str(p.health)) for _, p in probers.values())
        self.health.clear()
        for labels, n in counts.items():
            self.health.labels(*labels).set(n)

    def liveness_restart(self) -> None:
        self.liveness.inc()

    def restarted(self) -> None:
        self.restarts.inc()

    def runtime_error(self, runtime: str) -> None:
        self.errors.labels(runtime).inc()

    def pass_done(self, trigger: str, error: str | None, duration: float, actions: Iterable[dict]) -> None:
        """A reconcile pass ended: what started it (its first word: an event's action, resync, ...), whether it
        failed, how long it took and its actions (as Report.as_dict gives them)."""
        self.duration.observe(duration)
        self.passes.labels(trigger.split()[0], "error" if error else "ok").inc()
        for a in actions:
            self.actions.labels(a["kind"], a["outcome"]).inc()

    # -- serving ------------------------------------------------------------------------
    def serve(self, address: str, health: Callable[[], tuple[bool, str]]) -> None:
        """Serves /metrics and /healthz at address (HOST:PORT; port 0 picks one, self.address says which)."""
        host, port = parse_address(address)
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    status, body, kind = 200, generate_latest(registry), CONTENT_TYPE_LATEST
                elif path == "/healthz":
                    ok, text = health()
                    status, body, kind = (200 if ok else 503), f"{text}\n".encode(), "text/plain; charset=utf-8"
                else:
                    status, body, kind = 404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass  # a scrape every few seconds is not news

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise OrchestrError(f"--metrics-address {address}: {e.strerror or e}") from None
        self._server.daemon_threads = True
        bound = self._server.server_address
        self.address = f"{bound[0]}:{bound[1]}" if ":" not in bound[0] else f"[{bound[0]}]:{bound[1]}"
        threading.Thread(target=self._server.serve_forever, name="orchestr-metrics", daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT ([::1]:PORT for IPv6) to its parts; one line naming what was expected otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise OrchestrError(f"--metrics-address {address!r}: expected HOST:PORT, such as {ADDRESS}")
    return host, int(port)
