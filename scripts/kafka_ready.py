#!/usr/bin/env python3
"""Exit 0 once a Kafka broker on HOST:PORT answers a Metadata request with
itself among the brokers and a controller, 1 if it does not within TIMEOUT
seconds. Dependency-free (the standard library), so scripts/kafka.sh can use
it before anything else is installed.

Speaks Metadata v4 over PLAINTEXT: the oldest version Kafka 4.x still serves
(KIP-896 removed v0-v3), and the newest before the flexible encoding.

    kafka_ready.py HOST PORT [TIMEOUT]
"""
import socket
import struct
import sys
import time


def metadata(host: str, port: int) -> tuple[int, int]:
    """(number of brokers, controller id) from one Metadata v4 round trip."""
    client_id = b"stockflow-ready"
    body = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body += struct.pack(">ib", -1, 0)  # all topics (null array), no auto-create
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        head = recv(s, 4)
        (size,) = struct.unpack(">i", head)
        resp = recv(s, size)
    pos = 4 + 4  # correlation id, throttle time
    (brokers,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    for _ in range(brokers):
        pos += 4  # node id
        (hlen,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + hlen + 4  # host, port
        (rlen,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + max(rlen, 0)  # rack
    (clen,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + max(clen, 0)  # cluster id
    (controller,) = struct.unpack_from(">i", resp, pos)
    return brokers, controller


def recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    deadline = time.monotonic() + timeout
    while True:
        try:
            brokers, controller = metadata(host, port)
            if brokers > 0 and controller >= 0:
                return 0
        except (OSError, struct.error):
            pass
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
