#!/usr/bin/env python3
"""The "outside host" of the isolation tests: plain HTTP on the given ports, answering
``outside <port> <path>``. Run in the outside namespace: ``outside_server.py ADDRESS PORT...``."""

from __future__ import annotations

import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    def server_bind(self) -> None:
        """Without HTTPServer's reverse lookup of its own address (no resolver in a test namespace)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "outside", self.server_address[1]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"outside {self.server.server_address[1]} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main(address: str, ports: list[int]) -> None:
    servers = [Server((address, port), Handler) for port in ports]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], [int(p) for p in sys.argv[2:]])
