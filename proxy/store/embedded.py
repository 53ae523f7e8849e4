"""An embedded DynamoDB endpoint: moto's server on a free loopback port, in a thread.

    server, endpoint_url = start_moto_server()
    ...                                   # a DynamoDB client with endpoint_url, any credentials
    server.stop()

moto keeps its data in process-global memory: every server in one process shares it, so
use distinct table names.
"""

from __future__ import annotations

from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server


class _Handler(MotoRequestHandler):
    """Quiet, and without werkzeug's own ``Server`` header: moto sends one already, and
    aiohttp's strict parser (asyncio debug mode) refuses a response with two."""

    def send_header(self, keyword: str, value: str) -> None:
        if keyword == "Server" and value == self.version_string():
            return
        super().send_header(keyword, value)

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class EmbeddedMotoServer(ThreadedMotoServer):
    """``ThreadedMotoServer`` that binds port 0 atomically and closes its socket on stop."""

    def __init__(self, ip_address: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=_Handler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def stop(self) -> None:
        server = self._server
        super().stop()
        if server is not None:
            server.server_close()
        self._server = None


def start_moto_server(host: str = "127.0.0.1", port: int = 0) -> tuple[EmbeddedMotoServer, str]:
    """Start a moto server (port 0: a free one) and return it with its endpoint URL."""
    server = EmbeddedMotoServer(host, port)
    server.start()
    return server, server.endpoint_url
