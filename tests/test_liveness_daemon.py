"""Liveness end to end (issue 13, item 4): the daemon as a process on a real mosquitto, its
camera an image folder of rendered frames (PNG, lossless): a resident's print waved at the
door, the hallway, then the same resident walking up. The print gives no unlock and one
`presentation_attack` event naming her; the live visit unlocks, the signed unlock saying
how she was judged live."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from broker import MosquittoBroker
from door_site import DOOR, Daemon, Subscriber, make_site, topic, watch_and_start
from facegate.mqtt import UnlockVerifier
from facegate.pad.species import load_source, render
from facegate.vision.engine import FaceEngine

RESIDENT = "jerry_seinfeld"
TRAIN = Path(__file__).resolve().parent.parent / "models" / "data" / "5-celebrity" / "train"
#: The renders the in-process test (test_liveness) also shows: an attack, and a live face.
PRINT_SEED, LIVE_SEED = 5, 100008
END_S = 60.0


def write_png_folder(folder: Path, frames: Sequence[np.ndarray]) -> None:
    """RGB frames as 000000.png, 000001.png, ... (lossless: JPEG would add its own noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{index:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def test_a_print_of_a_resident_is_refused_and_she_is_let_in_live(
    engine: FaceEngine,
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    subscribers: list[Subscriber],
    daemons: list[Daemon],
) -> None:
    photo = next(p for p in sorted((TRAIN / RESIDENT).iterdir()) if "nytimes" in p.name)
    source = load_source(engine, photo, RESIDENT)
    assert source is not None
    hallway = np.full((480, 640, 3), 60, dtype=np.uint8)
    printed = render("print", source, PRINT_SEED).frames
    live = render("live_moving", source, LIVE_SEED).frames
    scene = [hallway] * 3 + printed + [hallway] * 15 + live + [hallway] * 10
    site = make_site(
        tmp_path / "site", mosquitto.port, people={RESIDENT: [DOOR]}, scene=[],
        camera={"loop": False}, recognition={"liveness": "passive"},
    )  # fmt: skip
    write_png_folder(site.camera, scene)
    sub, daemon = watch_and_start(mosquitto, site.config, subscribers, daemons)
    assert daemon.proc.wait(END_S) == 0, daemon.tail()  # the folder ends: the daemon stops
    sub.wait_for(lambda s: any(e["decision"] == "granted" for e in s.events()), what="grant")

    events = sub.events()
    attacks = [e for e in events if e["code"] == "presentation_attack"]
    assert [(e["decision"], e["person"]) for e in attacks] == [("denied", RESIDENT)]
    assert attacks[0]["liveness"]["verdict"] == "attack"
    (granted,) = [e for e in events if e["decision"] == "granted"]
    assert granted["person"] == RESIDENT and granted["liveness"]["verdict"] == "live"
    assert granted["ts"] > attacks[0]["ts"]  # the print came first and opened nothing

    (message,) = sub.on("unlock")
    unlock = UnlockVerifier(site.key, DOOR, clock=lambda: message.at).verify(message.payload)
    assert unlock.person == RESIDENT and unlock.event_id == granted["event_id"]
    assert unlock.liveness.method == "passive"
    assert unlock.liveness.score is not None and unlock.liveness.score >= 0.5
    assert topic("unlock") == message.topic
    assert time.time() - message.at < END_S
