#!/usr/bin/env python3
"""`make demo`: the whole door on this machine, finishing by itself.

Generates a signing key, starts a private mosquitto on a free 127.0.0.1 port, enrolls four
of the five celebrities from their train images, makes a video of val images (the four
residents, then the fifth person as a stranger), runs `facegate run` on it, and prints what
the example door controller verified. Exit 0 only if every resident got a verified unlock
and the stranger none.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from broker import MosquittoBroker  # noqa: E402  (the test suite's real-mosquitto launcher)
from scenes import (  # noqa: E402  (scene and config helpers shared with the daemon tests)
    empty_frame,
    photo,
    visit,
    write_config,
    write_enrollment,
    write_unlock_key,
    write_video,
)

DEMO = REPO / ".demo"
RESIDENTS = ("ben_afflek", "elton_john", "jerry_seinfeld", "mindy_kaling")
STRANGER = "madonna"
FPS = 10
SHOW_FRAMES = 12  # 1.2 s in front of the camera
GAP_FRAMES = 15  # empty hallway between visitors (longer than the decision window)
DAEMON_TIMEOUT_S = 120


def make_video(path: Path) -> list[str]:
    """Visitors in order: each resident once, then the stranger twice."""
    visitors = [*RESIDENTS, STRANGER, STRANGER]
    shown: dict[str, int] = {}
    frames = []
    for person in visitors:
        index = shown.get(person, 0)
        shown[person] = index + 1
        frames += visit(photo(person, "val", index), SHOW_FRAMES, GAP_FRAMES)
    frames += [empty_frame()] * GAP_FRAMES
    write_video(path, frames, FPS)
    return visitors


def write_files(port: int) -> Path:
    if not (DEMO / "unlock.key").exists():
        write_unlock_key(DEMO / "unlock.key")  # and unlock.pub, the controller's
    write_enrollment(DEMO / "enrollment.yaml", {person: ["front"] for person in RESIDENTS})
    return write_config(
        DEMO / "facegate.yaml",
        port=port,
        device="demo",
        cameras=[{"door": "front", "source": "demo.avi", "fps": FPS}],
        signing={"algorithm": "ed25519", "key_file": "unlock.key"},
    )


def facegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "facegate", *args]


def run_daemon(config: Path) -> int | None:
    """`facegate run` until the video ends; None if it had to be stopped after a timeout."""
    daemon = subprocess.Popen(facegate("run", "--config", str(config)))
    try:
        return daemon.wait(timeout=DAEMON_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"demo: the daemon did not finish in {DAEMON_TIMEOUT_S} s; stopping it")
        daemon.terminate()
        daemon.wait(timeout=15)
        return None


def main() -> int:
    DEMO.mkdir(exist_ok=True)
    (DEMO / "journal").mkdir(exist_ok=True)
    with MosquittoBroker(DEMO / "mosquitto") as broker:
        config = write_files(broker.port)
        print(f"demo: mosquitto on 127.0.0.1:{broker.port}; making the camera video", flush=True)
        visitors = make_video(DEMO / "demo.avi")
        print(f"demo: visitors in order: {', '.join(visitors)} ({STRANGER} is not enrolled)")
        subprocess.run(facegate("check-config", "--config", str(config)), check=True)
        subprocess.run(facegate("enroll", "--config", str(config), "--skip-bad"), check=True)
        controller = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "door_controller_example.py"),
             "--port", str(broker.port), "--door", "front",
             "--key-file", str(DEMO / "unlock.pub"), "--timeout", "90"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.0)  # let the controller subscribe before the first visitor arrives
        daemon_exit = run_daemon(config)
        time.sleep(1.0)
        controller.terminate()  # SIGTERM: it releases its relay and exits
        out, _ = controller.communicate(timeout=10)
    print("\n--- what the door controller saw ---")
    print(out.strip())
    unlocked = [
        line.split("person=")[1].split()[0]
        for line in out.splitlines()
        if line.startswith("UNLOCK")
    ]
    ok = daemon_exit == 0 and sorted(unlocked) == sorted(RESIDENTS) and STRANGER not in unlocked
    print("\n--- summary ---")
    print(json.dumps({"unlocked": unlocked, "stranger_unlocks": unlocked.count(STRANGER),
                      "daemon_exit": daemon_exit}))  # fmt: skip
    print("demo OK: every resident let in, the stranger kept out" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
