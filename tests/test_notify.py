"""sd_notify without the sdnotify package (issue 17, item 5: wheels only on the Pi)."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from facegate.notify import SystemdNotifier


def test_messages_reach_a_path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        SystemdNotifier().notify("READY=1")
        assert server.recv(64) == b"READY=1"


def test_messages_reach_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"facegate-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        SystemdNotifier().notify("WATCHDOG=1")
        assert server.recv(64) == b"WATCHDOG=1"


def test_outside_systemd_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    SystemdNotifier().notify("READY=1")  # no socket, no error


def test_a_vanished_socket_is_logged_once_and_never_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notifier = SystemdNotifier()
    for _ in range(3):
        notifier.notify("WATCHDOG=1")
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1
