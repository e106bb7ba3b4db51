#!/usr/bin/env python3
"""Network probes run inside a test namespace or a VM (plain python3, no dependencies).

    netclient.py tcp HOST PORT [TIMEOUT]     exit 0 when a TCP connection opens, 1 otherwise
    netclient.py dns SERVER NAME [TIMEOUT]   exit 0 when SERVER answers an A query for NAME over UDP, 1 otherwise
    netclient.py probes TIMEOUT KIND TARGET ARG [KIND TARGET ARG ...]
                                             every probe at once (threads); one JSON line per probe, in order:
                                             {"ok": true|false, "said": "..."}; exit 0
    netclient.py listen ADDRESS PORT         accept TCP connections (and close them) until killed

The DNS socket is connected, so an ICMP reject ends the wait at once; a silent drop waits out the timeout.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading


def tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"connected {host}:{port}"
    except OSError as exc:
        return False, f"failed {host}:{port}: {exc}"


def dns(server: str, name: str, timeout: float) -> tuple[bool, str]:
    query_id = int.from_bytes(os.urandom(2), "big")
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((server, 53))
            sock.send(packet)
            while True:
                data = sock.recv(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == query_id:
                    return True, f"answered by {server} (rcode {data[3] & 0x0F})"
        except OSError as exc:
            return False, f"no answer from {server}: {exc}"


PROBES = {"tcp": lambda target, arg, timeout: tcp(target, int(arg), timeout), "dns": dns}


def probes(timeout: float, specs: list[str]) -> int:
    triples = [specs[i : i + 3] for i in range(0, len(specs), 3)]
    results: list[tuple[bool, str]] = [(False, "did not run")] * len(triples)

    def run(i: int, kind: str, target: str, arg: str) -> None:
        results[i] = PROBES[kind](target, arg, timeout)

    threads = [threading.Thread(target=run, args=(i, *t)) for i, t in enumerate(triples)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for ok, said in results:
        print(json.dumps({"ok": ok, "said": said}))
    return 0


def listen(address: str, port: int) -> int:
    with socket.create_server((address, port)) as server:
        print("listening", flush=True)
        while True:
            server.accept()[0].close()


def main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "probes":
        return probes(float(argv[1]), argv[2:])
    target, arg = argv[1], argv[2]
    if kind == "listen":
        return listen(target, int(arg))
    if kind not in PROBES:
        print(f"unknown probe {kind}")
        return 2
    ok, said = PROBES[kind](target, arg, float(argv[3]) if len(argv) > 3 else 3.0)
    print(said)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
