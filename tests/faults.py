"""A loopback TCP proxy that a test can cut and restore: a real network outage.

Clients connect to ``proxy.port``; bytes are relayed to the upstream server.
``cut()`` closes every relayed connection and refuses new ones (connection
refused, like a restarting server); ``restore()`` accepts again. ``delay`` holds every
chunk of bytes that many seconds before relaying it: a slow server (a loaded
machine, a far network) whose slowness does not depend on this machine's load.
Traffic never leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = _free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stopped = False
        self.delay = 0.0  # seconds each chunk waits before it is relayed
        self.restore()

    def restore(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            # close() alone leaves a socket that another thread blocks on in accept()
            # listening; shutdown() wakes that thread and really stops accepting.
            _close(listener)
        for conn in conns:
            _close(conn)

    def close(self) -> None:
        self._stopped = True
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by cut()
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b, self), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket, proxy: Proxy) -> None:
    try:
        while data := src.recv(65536):
            if proxy.delay:
                time.sleep(proxy.delay)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
