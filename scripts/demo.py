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
import secrets
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from broker import MosquittoBroker  # noqa: E402  (the test suite's real-mosquitto launcher)

DEMO = REPO / ".demo"
CELEB = REPO / "models" / "data" / "5-celebrity"
RESIDENTS = ("ben_afflek", "elton_john", "jerry_seinfeld", "mindy_kaling")
STRANGER = "madonna"
FPS = 10
FRAME_W, FRAME_H = 640, 480
SHOW_FRAMES = 12  # 1.2 s in front of the camera
GAP_FRAMES = 15  # empty hallway between visitors (longer than the decision window)


def fit(image_path: Path) -> np.ndarray:
    """The photo scaled to fill a 640x480 frame (letterboxed), as a door camera sees a visitor."""
    image = cv2.imread(str(image_path))
    scale = min(FRAME_W / image.shape[1], FRAME_H / image.shape[0])
    resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    frame = np.full((FRAME_H, FRAME_W, 3), 60, dtype=np.uint8)
    y, x = (FRAME_H - resized.shape[0]) // 2, (FRAME_W - resized.shape[1]) // 2
    frame[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return frame


def make_video(path: Path) -> list[str]:
    """Visitors in order: each resident once, then the stranger twice."""
    visitors = [*RESIDENTS, STRANGER, STRANGER]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (FRAME_W, FRAME_H))
    empty = np.full((FRAME_H, FRAME_W, 3), 60, dtype=np.uint8)
    shown: dict[str, int] = {}
    for person in visitors:
        index = shown.get(person, 0)
        shown[person] = index + 1
        photo = sorted((CELEB / "val" / person).glob("*.jpg"))[index]
        for _ in range(GAP_FRAMES):
            writer.write(empty)
        frame = fit(photo)
        for _ in range(SHOW_FRAMES):
            writer.write(frame)
    for _ in range(GAP_FRAMES):
        writer.write(empty)
    writer.release()
    return visitors


def write_files(port: int) -> Path:
    key = DEMO / "hmac.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32) + "\n")
        key.chmod(0o600)
    people = "\n".join(
        f"  - id: {p}\n    name: {p.replace('_', ' ').title()}\n"
        f"    images: [../models/data/5-celebrity/train/{p}/]\n    doors: [front]"
        for p in RESIDENTS
    )
    (DEMO / "enrollment.yaml").write_text(f"people:\n{people}\n")
    config = DEMO / "facegate.yaml"
    config.write_text(
        "device: demo\n"
        "cameras:\n  - door: front\n    source: demo.avi\n    fps: 10\n"
        "recognition: {min_face_px: 60}\n"
        "models: {dir: ../models}\n"
        "enrollment: enrollment.yaml\ngallery: gallery.npz\njournal: journal\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, signing_key_file: hmac.key}}\n"
    )
    return config


def facegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "facegate", *args]


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
             "--key-file", str(DEMO / "hmac.key"), "--timeout", "90"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.0)  # let the controller subscribe before the first visitor arrives
        daemon = subprocess.run(facegate("run", "--config", str(config)), timeout=120)
        time.sleep(1.0)
        controller.terminate()
        out, _ = controller.communicate(timeout=10)
    print("\n--- what the door controller saw ---")
    print(out.strip())
    unlocked = [
        line.split("person=")[1].split()[0]
        for line in out.splitlines()
        if line.startswith("UNLOCK")
    ]
    ok = (
        daemon.returncode == 0
        and sorted(unlocked) == sorted(RESIDENTS)
        and STRANGER not in unlocked
    )
    print("\n--- summary ---")
    print(json.dumps({"unlocked": unlocked, "stranger_unlocks": unlocked.count(STRANGER),
                      "daemon_exit": daemon.returncode}))  # fmt: skip
    print("demo OK: every resident let in, the stranger kept out" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
