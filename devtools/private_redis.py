"""A private, throwaway Redis server for tests that must take Redis away (the shared one serves everyone's tests).

    with PrivateRedis() as r:
        url = r.url(0)   # redis://127.0.0.1:{port}/0
        r.stop()         # Redis is gone: connections are refused
        r.start()        # back, empty (no persistence)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time


class PrivateRedisError(RuntimeError):
    pass


class PrivateRedis:
    def __init__(self, port: int | None = None):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise PrivateRedisError("redis-server not found: install the redis-server package")
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise PrivateRedisError(f"redis-server exited with {self.process.returncode}") from None
                time.sleep(0.05)
        raise PrivateRedisError(f"redis-server did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
