"""A real mosquitto on 127.0.0.1 for tests: free port, own config, stop/restart, always killed.

Persistence is on (in the broker's tmp dir) so that a persistent-session subscriber keeps
its queued QoS1 messages across a broker restart, as a production broker would.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

MOSQUITTO: Final = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 5.0
HOST: Final = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class MosquittoBroker:
    """One mosquitto process; ``stop()`` and ``start()`` again keep the same port."""

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.host = HOST
        self.port = port or free_port()
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.conf_file = work_dir / "mosquitto.conf"
        self.log_file = work_dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        self.conf_file.write_text(
            f"listener {self.port} {HOST}\n"
            # Run as root, mosquitto would switch to user "mosquitto" and then fail to write
            # its log and persistence file in our private tmp dir.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.work_dir}/\n"
            f"log_dest file {self.log_file}\n"
            "log_type all\n"
            "max_queued_messages 100000\n"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start and wait until the port accepts connections."""
        if self.running:
            return
        stderr = (self.work_dir / "mosquitto.stderr").open("ab")
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_file)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
        stderr.close()
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self._proc.returncode}: {self.logs()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"mosquitto not listening on {HOST}:{self.port}: {self.logs()}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        parts = [self.log_file, self.work_dir / "mosquitto.stderr"]
        return "".join(p.read_text(errors="replace")[-4000:] for p in parts if p.exists())

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
