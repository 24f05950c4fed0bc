"""Issue 11 at start-up: SIGHUP while the daemon starts, and values `run` would fail on
later (refused by check-config and run alike, exit 2)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from broker import MosquittoBroker
from door_site import (
    DOOR,
    RESIDENT,
    START_S,
    Daemon,
    Subscriber,
    face,
    hallway,
    make_site,
)
from facegate.cli import main


def test_sighup_during_start_up_is_harmless(
    mosquitto: MosquittoBroker, tmp_path: Path, daemons: list[Daemon]
) -> None:
    site = make_site(
        tmp_path, mosquitto.port, people={RESIDENT: [DOOR]}, scene=hallway(5) + face(RESIDENT, 10),
        enrolled=False,  # the start-up the signals land in embeds the resident's photos
    )  # fmt: skip
    sub = Subscriber(mosquitto.host, mosquitto.port)
    try:
        daemon = Daemon(site.config)
        daemons.append(daemon)
        # From the moment facegate's first line runs (its SIGHUP disposition changes; before
        # that the interpreter starts, about 50 ms, and no code can set a handler) through
        # imports, model load and enrollment.
        wait_for_sighup_handled(daemon.pid)
        started = time.monotonic()
        while time.monotonic() - started < 1.5 and daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGHUP)
            time.sleep(0.02)
        daemon.wait_ready()
        sub.wait_for(lambda s: bool(s.unlocks()), timeout=START_S, what="an unlock")
        assert daemon.terminate() == 0
    finally:
        sub.close()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("reconnect_max_s: .inf", "mqtt.reconnect_max_s"),
        ("reconnect_min_s: 1000000, reconnect_max_s: 1000000", "mqtt.reconnect_m"),
        ('topic_prefix: "face\\0gate"', "mqtt.topic_prefix"),
        ("topic_prefix: $SYS", "mqtt.topic_prefix"),
    ],
)
def test_run_refuses_what_would_break_it_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, field: str
) -> None:
    """Through the CLI's entry point in-process (test_daemon runs the process for exit 2)."""
    site = make_site(tmp_path, 1883, people={RESIDENT: [DOOR]}, scene=hallway(1))
    site.config.write_text(site.config.read_text().replace("mqtt: {", "mqtt: {" + extra + ", "))
    for command in ("check-config", "run"):
        assert main([command, "--config", str(site.config)]) == 2, command
        out, err = capsys.readouterr()
        assert str(site.config) in err and field in err, err[-2000:]
        assert "Traceback" not in err + out


def wait_for_sighup_handled(pid: int, timeout_s: float = 10.0) -> None:
    """Until the process ignores or catches SIGHUP (/proc/PID/status SigIgn / SigCgt)."""
    bit = 1 << (signal.SIGHUP - 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fields = dict(
            line.split(":\t", 1)
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ":\t" in line
        )
        if (int(fields["SigIgn"], 16) | int(fields["SigCgt"], 16)) & bit:
            return
        time.sleep(0.005)
    raise AssertionError("the daemon never took over SIGHUP")
