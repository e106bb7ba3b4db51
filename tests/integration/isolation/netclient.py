#!/usr/bin/env python3
"""Network probes run inside a test namespace or a VM (plain python3, no dependencies).

    netclient.py tcp HOST PORT [TIMEOUT]     exit 0 when a TCP connection opens, 1 otherwise
    netclient.py dns SERVER NAME [TIMEOUT]   exit 0 when SERVER answers an A query for NAME over UDP, 1 otherwise
    netclient.py listen ADDRESS PORT         accept TCP connections (and close them) until killed

One line on stdout says what happened.
"""

from __future__ import annotations

import os
import socket
import struct
import sys


def tcp(host: str, port: int, timeout: float) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            print(f"connected {host}:{port}")
            return 0
    except OSError as exc:
        print(f"failed {host}:{port}: {exc}")
        return 1


def dns(server: str, name: str, timeout: float) -> int:
    query_id = int.from_bytes(os.urandom(2), "big")
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, (server, 53))
            while True:
                data, _ = sock.recvfrom(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == query_id:
                    print(f"answered by {server} (rcode {data[3] & 0x0F})")
                    return 0
        except OSError as exc:
            print(f"no answer from {server}: {exc}")
            return 1


def listen(address: str, port: int) -> int:
    with socket.create_server((address, port)) as server:
        print("listening", flush=True)
        while True:
            server.accept()[0].close()


def main(argv: list[str]) -> int:
    kind, target, arg = argv[0], argv[1], argv[2]
    timeout = float(argv[3]) if len(argv) > 3 else 3.0
    if kind == "tcp":
        return tcp(target, int(arg), timeout)
    if kind == "dns":
        return dns(target, arg, timeout)
    if kind == "listen":
        return listen(target, int(arg))
    print(f"unknown probe {kind}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
