"""Review of unknown faces (issue 14, item 4): the daemon keeps the best photo of each
stranger's visit (0600), `facegate review` groups them by identity, `assign` enrolls a
group, `ignore` and `forget` delete, and retention is enforced.

In-process through DoorPipeline with real photos, a fake clock and fake days; one
end-to-end test with the daemon as a process.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from broker import MosquittoBroker
from door_site import Daemon, Subscriber, enrolled_gallery, make_site
from facegate.cli import main
from facegate.config import load_config
from facegate.decisions import Decision, ReasonCode
from facegate.pipeline import DoorPipeline, Recognition
from facegate.policy import DoorPolicy
from facegate.review import (
    DAY_S,
    ReviewStore,
    UnknownFaceCollector,
    group_faces,
)
from facegate.service import load_recognition
from facegate.vision.engine import FaceEngine
from scenes import empty_frame, fit, photo, write_config, write_enrollment

RESIDENT = "jerry_seinfeld"
#: Visits of two strangers on five days: (person, split, photo index). One photo per visit
#: (its frames all alike); these photos of one person are within L2 0.62 of each other.
MADONNA = (("madonna", "val", 0), ("madonna", "val", 2), ("madonna", "train", 0))
BEN = (("ben_afflek", "val", 0), ("ben_afflek", "val", 1))
DAY0 = 1_764_500_000.0  # a morning, UTC


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rgb(bgr: np.ndarray) -> np.ndarray:
    """The RGB frame (read-only: a visit shows the same array frame after frame, and no
    step may change what the next one sees)."""
    frame = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    frame.flags.writeable = False
    return frame


@pytest.fixture(scope="module")
def enrolled_site(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Path:
    """The site with the resident enrolled: the gallery door_site builds once per test
    process (the daemon test's site copies the same one), brought up to date here."""
    root = tmp_path_factory.mktemp("review") / "site"
    (root / "journal").mkdir(parents=True)
    (root / "hmac.key").write_text("00" * 32 + "\n")
    write_enrollment(root / "enrollment.yaml", {RESIDENT: ["front"]})
    config = write_config(
        root / "facegate.yaml", port=1883, cameras=[{"door": "front", "source": "cam/"}]
    )
    with config.open("a") as handle:
        handle.write("review: {enabled: true, retention_days: 30, max_faces: 100}\n")
    shutil.copy(enrolled_gallery({RESIDENT: ["front"]}), root / "gallery.fgg")
    assert RESIDENT in load_recognition(load_config(config), engine).matcher
    return root


@pytest.fixture
def site(tmp_path: Path, enrolled_site: Path, engine: FaceEngine) -> tuple[Path, Recognition]:
    """A fresh copy of the enrolled site (its gallery up to date: no photo embedded again)."""
    config = shutil.copytree(enrolled_site, tmp_path / "site") / "facegate.yaml"
    return config, load_recognition(load_config(config), engine)


class Door:
    """A door pipeline and the collector the loop would feed, on fake clocks."""

    def __init__(self, engine: FaceEngine, state: Recognition) -> None:
        self.clock, self.day = Clock(), 0
        self.state = state
        rules = DoorPolicy("front", "face", state.config.recognition, state.enrollment)
        self.pipe = DoorPipeline("front", engine, state, rules)
        self.store = ReviewStore(state.config.review_dir)
        self.collector = UnknownFaceCollector(
            self.store, 30, 100, clock=self.clock, wall=lambda: DAY0 + self.day * DAY_S
        )
        self.collector.start()

    def visit(self, frame: np.ndarray, frames: int = 8, day: int = 0) -> list[Decision]:
        """Someone in view for `frames` frames, then the empty hallway until the track ends."""
        self.day = day
        out = []
        face, hallway = rgb(frame), rgb(empty_frame())
        for index in range(frames + 30):
            image = face if index < frames else hallway
            result = self.pipe.step(image, self.clock.now + day * DAY_S)
            self.collector.frame("front", image, result, self.state)
            out += result.decisions
            self.clock.now += 0.1
        return out

    def close(self) -> list[object]:
        self.collector.close()
        return list(self.store.faces())


def test_strangers_are_kept_once_per_visit_residents_and_glimpses_never(
    site: tuple[Path, Recognition], engine: FaceEngine
) -> None:
    config, state = site
    door = Door(engine, state)
    for day, (person, split, index) in enumerate((*MADONNA, *BEN)):
        door.visit(fit(photo(person, split, index)), day=day)
    assert any(d.kind == "granted" for d in door.visit(fit(photo(RESIDENT, "val", 0))))
    door.visit(fit(photo("mindy_kaling", "val", 0)), frames=2)  # a glimpse
    faces = door.close()
    assert len(faces) == 5
    folder = state.config.review_dir
    assert folder.stat().st_mode & 0o777 == 0o700
    files = sorted(folder.iterdir())
    assert len(files) == 10 and all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    groups = group_faces(ReviewStore(folder).faces())
    assert sorted((len(g.faces), g.days) for g in groups) == [(2, 2), (3, 3)]


def test_a_track_decided_as_anything_but_unknown_is_never_kept(
    site: tuple[Path, Recognition], engine: FaceEngine
) -> None:
    """A detected presentation attack (or any other decision about the track) disqualifies
    it: simulated with a denial naming the stranger's track."""
    _, state = site
    door = Door(engine, state)
    frame, hallway = rgb(fit(photo("madonna", "val", 0))), rgb(empty_frame())
    for index in range(40):
        image = frame if index < 8 else hallway
        result = door.pipe.step(image, door.clock.now)
        if result.track_ids and index == 4:
            attack = Decision("denied", "front", None, 1.0, 0.0, 3, ReasonCode.BLOCKED, "attack",
                              "e", door.clock.now, False, track_id=result.track_ids[0])  # fmt: skip
            result = dataclasses.replace(result, decisions=[attack])
        door.collector.frame("front", image, result, state)
        door.clock.now += 0.1
    assert door.close() == []


def test_retention_and_max_faces(tmp_path: Path, engine: FaceEngine) -> None:
    store = ReviewStore(tmp_path / "review")
    face = engine.encode(rgb(fit(photo("madonna", "val", 0))))[0]
    assert face.embedding is not None
    now = DAY0 + 100 * DAY_S
    for age_days in (40, 31, 20, 10, 5, 1):
        store.add("front", now - age_days * DAY_S, b"\xff\xd8jpeg", face.embedding, face, 3)
    assert store.prune(now, 30, 3) == 3  # two too old, then one beyond max_faces
    assert [round((now - f.ts) / DAY_S) for f in store.faces()] == [10, 5, 1]


# --- the command --------------------------------------------------------------------------------


def review(config: Path, *args: str) -> int:
    return main(["review", *args, "--config", str(config)] if args else ["review", "--config",
                                                                          str(config)])  # fmt: skip


def test_review_assign_ignore_forget(
    site: tuple[Path, Recognition], engine: FaceEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    config, state = site
    door = Door(engine, state)
    for day, (person, split, index) in enumerate((*MADONNA, BEN[0])):
        door.visit(fit(photo(person, split, index)), day=day)
    door.close()
    capsys.readouterr()
    assert main(["review", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    by_size = sorted(listed, key=lambda g: g["faces"])
    ben, madonna = by_size[0]["group"], by_size[1]["group"]
    assert by_size[1]["faces"] == 3 and by_size[1]["days"] == 3
    before = (config.parent / "enrollment.yaml").read_bytes()
    # A new person needs a door; nothing written without it.
    assert main(["review", "assign", madonna, "--as", "madonna", "--config", str(config)]) == 2
    assert "is new: give the door" in capsys.readouterr().err
    assert (config.parent / "enrollment.yaml").read_bytes() == before
    code = main(["review", "assign", madonna, "--as", "madonna", "--door", "front",
                 "--config", str(config)])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "added madonna: 3 photo(s)" in out.out
    assert len(list((config.parent / "photos" / "madonna").iterdir())) == 3
    # The door knows her now, on a photo the review never saw.
    now_state = load_recognition(load_config(config), engine)
    assert "madonna" in now_state.matcher
    again = Door(engine, now_state)
    left = again.store.faces()  # ben's
    decisions = again.visit(fit(photo("madonna", "train", 4)))
    assert any(d.kind == "granted" and d.person == "madonna" for d in decisions)
    assert again.close() == left  # her visit is no stranger's: nothing new for review
    assert main(["review", "ignore", "nosuch", "--config", str(config)]) == 2
    assert main(["review", "ignore", ben, "--config", str(config)]) == 0
    assert ReviewStore(state.config.review_dir).faces() == []
    assert main(["review", "forget", "--older-than", "0", "--config", str(config)]) == 0


def test_forget_older_than(
    tmp_path: Path, engine: FaceEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "site"
    (root / "journal").mkdir(parents=True)
    (root / "hmac.key").write_text("00" * 32 + "\n")
    write_enrollment(root / "enrollment.yaml", {RESIDENT: ["front"]})
    cameras = [{"door": "front", "source": "cam/"}]
    config = write_config(root / "facegate.yaml", port=1883, cameras=cameras)
    store = ReviewStore(load_config(config).review_dir)
    face = engine.encode(rgb(fit(photo("madonna", "val", 0))))[0]
    assert face.embedding is not None
    for age_days in (10, 3, 1):
        store.add("front", time.time() - age_days * DAY_S, b"jpeg", face.embedding, face, 3)
    assert main(["review", "forget", "--older-than", "2", "--config", str(config)]) == 0
    assert "deleted 2 face(s)" in capsys.readouterr().out
    assert len(store.faces()) == 1
    assert main(["review", "--config", str(config)]) == 0
    assert "review is off" in capsys.readouterr().out


# --- the daemon ---------------------------------------------------------------------------------


def test_the_daemon_keeps_a_strangers_face(
    tmp_path: Path, mosquitto: MosquittoBroker, daemons: list[Daemon],
    subscribers: list[Subscriber],
) -> None:  # fmt: skip
    scene: Sequence[np.ndarray] = [fit(photo("madonna", "val", 1))] * 10 + [empty_frame()] * 30
    site = make_site(tmp_path / "site", mosquitto.port, people={RESIDENT: ["front"]}, scene=scene)
    with site.config.open("a") as config:
        config.write("review: {enabled: true}\n")
    subscribers.append(Subscriber(mosquitto.host, mosquitto.port))
    daemon = Daemon(site.config)
    daemons.append(daemon)
    daemon.wait_ready()
    folder = load_config(site.config).review_dir
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list(folder.glob("*.json")):
        time.sleep(0.2)
    records = list(folder.glob("*.json"))
    assert records, daemon.tail()
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())
    assert "review: unknown face kept at front" in daemon.log()
    assert daemon.terminate() == 0
