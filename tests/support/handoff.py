"""The broker's side of a connection handoff (:mod:`servers.handoff`), by hand, for tests of the PACS."""

from __future__ import annotations

import array
import socket
from pathlib import Path


def hand_over(path: Path, request: bytes, timeout: float = 30) -> tuple[bytes, bytes]:
    """Hand a connection to the PACS at ``path`` with ``request`` (as a broker does); the answer read on
    the connection until the PACS closes it, and the status the PACS reports."""
    a, b = socket.socketpair()
    with a, b, socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as control:
        control.connect(str(path))
        control.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [b.fileno()]))])
        b.close()  # the PACS holds the connection now
        a.settimeout(timeout)
        control.settimeout(timeout)
        answer = b""
        while chunk := a.recv(1 << 20):
            answer += chunk
        return answer, control.recv(16)
