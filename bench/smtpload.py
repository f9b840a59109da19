"""SMTP load: C connections in threads, each sending 3 KB messages back to back.

    python -m bench.smtpload --port P --connections C --seconds S [--messages N]

Prints one JSON object: messages acknowledged, seconds, and the latency of each
message from the end of DATA (the final dot) to the server's reply. The stdlib
client is what the issue's ceiling figure was measured with.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import socket
import sys
import threading
import time
import uuid

SUPPORT = "support@example.com"
_LINE = b"Our dashboard shows error E-42 after the upgrade; the details follow below.\r\n"


def body(size: int) -> bytes:
    """A text body that brings a message to about `size` bytes with its headers."""
    return _LINE * max(1, (size - 350) // len(_LINE))


def message(sender: str, text: bytes) -> bytes:
    """One message in wire form (CRLF, dot-stuffing unnecessary: no line starts with '.')."""
    tag = uuid.uuid4().hex
    head = (
        f"From: Customer <{sender}>\r\n"
        f"To: {SUPPORT}\r\n"
        f"Subject: Dashboard error E-42 ({tag[:8]})\r\n"
        f"Message-ID: <{tag}@load.example>\r\n"
        "Date: Wed, 25 Nov 2026 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "\r\n"
    )
    return head.encode() + text


def worker(
    port: int,
    size: int,
    stop_at: float,
    quota: list[int],
    lock: threading.Lock,
    latencies: list[float],
    errors: list[str],
    senders: int,
) -> None:
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo("load.example")
    assert client.sock is not None
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    text = body(size)
    n = 0
    try:
        while time.monotonic() < stop_at:
            with lock:
                if quota[0] <= 0:
                    return
                quota[0] -= 1
            n += 1
            sender = f"customer{(n * 7919 + threading.get_ident()) % senders}@load.example"
            raw = message(sender, text)
            code, _ = client.mail(sender)
            if code != 250:
                errors.append(f"MAIL {code}")
                client.rset()
                continue
            code, _ = client.rcpt(SUPPORT)
            if code != 250:
                errors.append(f"RCPT {code}")
                client.rset()
                continue
            # smtplib.data() sends DATA, waits for 354, then the body and the
            # dot, and reads the reply: time only the last step.
            code, _ = client.docmd("DATA")
            if code != 354:
                errors.append(f"DATA {code}")
                client.rset()
                continue
            # One write with the final dot: two small writes would meet
            # Nagle's algorithm and the peer's delayed ACK (40 ms a message).
            started = time.perf_counter()
            client.send(raw + b".\r\n")
            code, _ = client.getreply()
            elapsed = time.perf_counter() - started
            if code == 250:
                latencies.append(elapsed)
            else:
                errors.append(f"end of DATA {code}")
    finally:
        try:
            client.quit()
        except smtplib.SMTPException:
            client.close()


def run(port: int, connections: int, seconds: float, messages: int, size: int) -> dict[str, object]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    quota = [messages]
    started = time.monotonic()
    stop_at = started + seconds
    threads = [
        threading.Thread(
            target=worker,
            args=(port, size, stop_at, quota, lock, latencies, errors, 5000),
            daemon=True,
        )
        for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "connections": connections,
        "seconds": elapsed,
        "acknowledged": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:5],
        "latencies": latencies,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--messages", type=int, default=10**9)
    parser.add_argument("--size", type=int, default=3072)
    args = parser.parse_args()
    result = run(args.port, args.connections, args.seconds, args.messages, args.size)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
