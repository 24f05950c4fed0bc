"""`facegate run` end to end: real models, a real mosquitto, the daemon as a subprocess.

Each test builds a door site in tmp_path (key, enrollment.yaml, facegate.yaml, a camera
made of val photos), starts `python -m facegate run`, and watches MQTT with a plain
paho v5 client, the way a door controller would. Every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from paho.mqtt.client import Client

from broker import MosquittoBroker
from door_site import (
    DOOR,
    FAST,
    LATE_RESIDENT,
    OTHER_RESIDENT,
    OUTAGE_S,
    PREFIX,
    RESIDENT,
    START_S,
    STRANGER,
    WAIT_S,
    Daemon,
    NotifySocket,
    Received,
    Subscriber,
    assert_no_stranger_unlock,
    enrolled_gallery,
    face,
    granted,
    hallway,
    make_site,
    retained_status,
    watch_and_start,
)
from facegate.cli import main
from facegate.keys import KeyType, PrivateKey, PublicKey, load_public_key, public_key_path
from facegate.mqtt import UnlockVerifier, sign_unlock
from facegate.mqtt.signing import UnlockRejected
from scenes import (
    write_config,
    write_enrollment,
    write_folder,
    write_unlock_key,
)
from tls_broker import TlsBroker, tls_broker, tools_missing

# -- 1, 2, 5, 6, 7, 8, 9: one daemon, two doors, the tests in file order, then SIGTERM --

GARAGE = "garage"


@dataclass
class Door:
    """The module's running daemon and what a controller at each of its doors sees."""

    broker: MosquittoBroker
    sub: Subscriber  # every facegate topic, subscribed before the daemon started
    daemon: Daemon
    dir: Path
    key: PublicKey  # the front door's own key
    shared_key: PublicKey  # the site's key, which the garage uses

    def front_unlocks(self, count: int) -> list[Received]:
        self.sub.wait_for(
            lambda s: len(s.on("unlock")) >= count, WAIT_S, f"{count} unlocks at the front door"
        )
        return self.sub.on("unlock")

    def garage_unlocks(self) -> list[Received]:
        """The garage's unlocks; with none yet, a badge claim first (a card_and_face door)."""
        if not self.sub.on("unlock", GARAGE):
            claim = {"request_id": "badge-2", "identity": RESIDENT, "timeout_s": 5}
            self.sub.publish("verify", json.dumps(claim), door=GARAGE)
            self.sub.wait_for(lambda s: bool(s.on("unlock", GARAGE)), what="a garage unlock")
        return self.sub.on("unlock", GARAGE)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    """One daemon for the tests up to the SIGTERM one (they run in file order): the resident
    in front of two doors' cameras. front is an ordinary door signing with its own key; the
    garage is card_and_face (a badge claim and the face) and signs with the site's shared
    key. OTHER_RESIDENT is enrolled at the front door, never on camera (the wrong person of
    a verify request). The gallery is the installed door's (make_site's): the daemon's
    embedding at start is test_hardening_start's and the SIGHUP enrollment's."""
    root = tmp_path_factory.mktemp("door")
    with MosquittoBroker(root / "mosquitto") as broker:
        site_dir = root / "site"
        site_dir.mkdir()
        shared = load_public_key(public_key_path(write_unlock_key(site_dir / "unlock.key")))
        front = load_public_key(public_key_path(write_unlock_key(site_dir / "front.key")))
        assert front != shared
        (site_dir / "journal").mkdir()
        people = {RESIDENT: [DOOR, GARAGE], OTHER_RESIDENT: [DOOR]}
        write_enrollment(site_dir / "enrollment.yaml", people)
        shutil.copy(enrolled_gallery(people), site_dir / "gallery.fgg")
        write_folder(site_dir / "camera", face(RESIDENT))
        write_folder(site_dir / "garage-camera", face(RESIDENT))
        config = write_config(
            site_dir / "facegate.yaml", port=broker.port, recognition=FAST,
            cameras=[{"door": DOOR, "source": "camera/", "fps": 10, "loop": True,
                      "signing_key_file": "front.key"},
                     # 5 fps: three frames agree in 0.6 s, well inside the 1 s cooldown.
                     {"door": GARAGE, "source": "garage-camera/", "fps": 5, "loop": True,
                      "mode": "card_and_face"}],
            signing={"algorithm": "ed25519", "key_file": "unlock.key"},
        )  # fmt: skip
        sub = Subscriber(broker.host, broker.port)
        daemon = Daemon(config)
        try:
            daemon.wait_ready()
            yield Door(broker, sub, daemon, site_dir, front, shared)
        finally:
            daemon.kill()
            sub.close()


def test_resident_gets_a_valid_signed_expiring_unlock(door: Door) -> None:
    first = door.front_unlocks(2)[0]
    verifier = UnlockVerifier(door.key, DOOR, clock=lambda: first.at)
    unlock = verifier.verify(first.payload)
    assert unlock.person == RESIDENT
    assert first.at < unlock.expires_at, "arrived after it expired"
    assert not first.retain, "unlocks must never be retained"
    assert first.expiry_s is not None and 1 <= first.expiry_s <= 6, "v5 message expiry missing"
    # The unlock is published before its event (a resident is waiting): wait for the event.
    door.sub.wait_for(
        lambda s: any(e["event_id"] == unlock.event_id for e in s.events()), what="grant event"
    )
    event = next(e for e in door.sub.events() if e["event_id"] == unlock.event_id)
    assert event["decision"] == "granted" and event["person"] == RESIDENT
    assert event["distance"] <= 0.9
    assert retained_status(door.broker.host, door.broker.port)["state"] == "online"


def with_claims(token: bytes, claims: Mapping[str, object]) -> bytes:
    """`token` with another payload and its original signature (tampering)."""
    header, _, signature = token.split(b".")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    return b".".join([header, payload, signature])


def test_tampered_expired_and_replayed_unlocks_are_rejected(door: Door) -> None:
    """Real unlock payloads captured from the broker, checked by the reference verifier."""
    first_msg, second_msg = door.front_unlocks(2)[:2]
    first, second = first_msg.claims(), second_msg.claims()
    key = door.key

    def verifier(at: float) -> UnlockVerifier:
        return UnlockVerifier(key, DOOR, clock=lambda: at)

    def rejected(v: UnlockVerifier, payload: bytes) -> str:
        with pytest.raises(UnlockRejected) as info:
            v.verify(payload)
        return info.value.reason

    at = first_msg.at
    token = first_msg.payload
    # Tampered: another person, a later expiry, another door (signature kept), a payload
    # signed with another key, a signature bit flipped, the signature removed.
    for change in ({"sub": STRANGER}, {"exp": first["exp"] + 60}, {"door": "back"}):
        assert rejected(verifier(at), with_claims(token, {**first, **change})) == "bad_signature"
    other = PrivateKey.generate(KeyType.ED25519)
    forged = sign_unlock({**first, "sub": STRANGER}, other).encode()
    assert rejected(verifier(at), forged) == "bad_signature"
    flipped = token[:-3] + (b"A" if token[-3:-2] != b"A" else b"B") + token[-2:]
    assert rejected(verifier(at), flipped) == "bad_signature"
    assert rejected(verifier(at), token.rsplit(b".", 1)[0]) == "malformed"
    # Expired: the same bytes a moment after exp.
    assert rejected(verifier(first["exp"] + 0.001), first_msg.payload) == "expired"
    # Replayed: accepted once, then refused; an older seq after a newer one is refused.
    v = verifier(second_msg.at)
    assert v.verify(second_msg.payload).event_id == second["jti"]
    assert rejected(v, second_msg.payload) == "replayed"
    assert first["seq"] < second["seq"]
    assert rejected(v, first_msg.payload) in ("stale_seq", "expired")
    v2 = verifier(first_msg.at)
    v2.verify(first_msg.payload)
    assert rejected(v2, first_msg.payload) == "replayed"


# -- 8: card_and_face ---------------------------------------------------------------------


def test_card_and_face_door_needs_claim_and_face(door: Door) -> None:
    sub = door.sub
    sub.wait_for(
        lambda s: any(e["decision"] == "denied" for e in s.events(GARAGE)),
        what="denial without claim",
    )
    # The face keeps being seen (a denial again after the cooldown): still no unlock.
    sub.wait_for(
        lambda s: sum(e["decision"] == "denied" for e in s.events(GARAGE)) >= 2,
        what="a second denial",
    )
    assert sub.unlocks(GARAGE) == []
    denial = next(e for e in sub.events(GARAGE) if e["decision"] == "denied")
    assert denial["person"] == RESIDENT and "claim" in denial["reason"]

    claim = {"request_id": "badge-1", "identity": RESIDENT, "timeout_s": 5}
    sub.publish("verify", json.dumps(claim), door=GARAGE)
    sub.wait_for(lambda s: bool(s.unlocks(GARAGE)), what="unlock after claim + face")
    unlock = UnlockVerifier(door.shared_key, GARAGE).verify(sub.on("unlock", GARAGE)[0].payload)
    assert unlock.person == RESIDENT
    # The unlock is published before its event (a resident is waiting): wait for the event.
    sub.wait_for(
        lambda s: any(e["event_id"] == unlock.event_id for e in s.events(GARAGE)),
        what="grant event",
    )
    grant = next(e for e in sub.events(GARAGE) if e["event_id"] == unlock.event_id)
    assert grant["decision"] == "granted" and grant.get("request_id") == "badge-1"
    sub.wait_for(
        lambda s: any(r.json()["match"] is True for r in s.on("verify/result", GARAGE)),
        what="verify result match true",
    )


# -- 2: each door its own key -------------------------------------------------------------


def test_each_door_signs_its_unlocks_with_its_own_key(door: Door) -> None:
    """front has its own key, garage uses the shared one: a leaked garage controller key
    (or the shared key) cannot produce or accept a front-door unlock."""
    front_unlock = door.front_unlocks(1)[0]
    garage_unlock = door.garage_unlocks()[0]
    at = front_unlock.at
    assert UnlockVerifier(door.key, DOOR, clock=lambda: at).verify(front_unlock.payload)
    at_garage = garage_unlock.at
    verified = UnlockVerifier(door.shared_key, GARAGE, clock=lambda: at_garage).verify(
        garage_unlock.payload
    )
    assert verified.person == RESIDENT
    with pytest.raises(UnlockRejected) as rejected:
        UnlockVerifier(door.shared_key, DOOR, clock=lambda: at).verify(front_unlock.payload)
    assert rejected.value.reason == "bad_signature"


# -- 7: malformed and valid verify requests -----------------------------------------------


def test_malformed_verify_payloads_are_ignored_and_claims_are_answered(door: Door) -> None:
    sub, daemon = door.sub, door.daemon
    sub.wait_for(lambda s: bool(s.on("status")) and s.on("status")[-1].json()["state"] == "online")

    valid = {"request_id": "ok", "identity": RESIDENT, "timeout_s": 3}
    bad: list[tuple[str, bytes]] = [
        (DOOR, b"not json"),
        (DOOR, b"\xff\xfe\x00garbage"),
        (DOOR, json.dumps({**valid, "pad": "x" * 5000}).encode()),
        (DOOR, json.dumps({"request_id": 7, "identity": ["x"], "timeout_s": "soon"}).encode()),
        (DOOR, json.dumps({**valid, "timeout_s": 1e9}).encode()),
        (DOOR, b"[1, 2, 3]"),
        (DOOR, b""),
        ("no-such-door", json.dumps(valid).encode()),
    ]
    mark = len(daemon.log())  # the module's daemon: count from here
    for door_name, payload in bad:
        sub.publish("verify", payload, door=door_name)
    deadline = time.monotonic() + WAIT_S
    while daemon.log()[mark:].count("ignored") < len(bad) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon.log()[mark:].count("ignored") == len(bad), daemon.tail()
    assert daemon.proc.poll() is None, daemon.tail()
    assert "Traceback" not in daemon.log()
    assert not sub.on("verify/result"), "a malformed request was answered"
    assert not sub.on("verify/result", "no-such-door")

    after = time.time()
    sub.wait_for(lambda s: granted(s, RESIDENT, after=after), what="grant after the garbage")

    sub.publish(
        "verify", json.dumps({"request_id": "r-right", "identity": RESIDENT, "timeout_s": 4})
    )
    sub.wait_for(lambda s: bool(s.on("verify/result")), what="verify result (right person)")
    result = sub.on("verify/result")[-1].json()
    assert result["request_id"] == "r-right" and result["match"] is True
    assert result["distance"] is not None and result["distance"] <= 0.9

    wrong = {"request_id": "r-wrong", "identity": OTHER_RESIDENT, "timeout_s": 2}
    sub.publish("verify", json.dumps(wrong))
    sub.wait_for(lambda s: len(s.on("verify/result")) >= 2, what="verify result (wrong person)")
    result = sub.on("verify/result")[-1].json()
    assert result["request_id"] == "r-wrong" and result["match"] is False


# -- 6: camera loss -----------------------------------------------------------------------


def test_camera_lost_and_back_resumes_frames_and_grants(door: Door) -> None:
    sub, daemon = door.sub, door.daemon
    door.front_unlocks(1)  # granted before the camera loss
    camera = door.dir / "camera"
    away = door.dir / "camera-unplugged"
    mark = len(daemon.log())
    camera.rename(away)
    daemon.wait_log(r"camera front .*(failed|stalled).*reconnecting", WAIT_S, start=mark)
    # Down across a failed retry (backoff 0.5 s, then 1 s: the next retry, 1.5 s after the
    # loss, finds it back; the retries after the first failure log at DEBUG).
    time.sleep(1.0)
    away.rename(camera)
    back = time.time()
    daemon.wait_log(r"camera front recovered after", WAIT_S, start=mark)
    sub.wait_for(lambda s: granted(s, RESIDENT, after=back), what="grant after the camera is back")
    sub.wait_for(
        lambda s: any(u["iat"] >= back for u in s.unlocks()), what="unlock after the camera is back"
    )
    assert daemon.proc.poll() is None


# -- 9: SIGTERM, the module daemon's last test ---------------------------------------------


def test_sigterm_publishes_offline_retained_and_exits_0(door: Door) -> None:
    host, port = door.broker.host, door.broker.port
    assert retained_status(host, port)["state"] == "online"
    exit_code = door.daemon.terminate()
    log = door.daemon.log()
    assert exit_code == 0, log[-3000:]
    assert retained_status(host, port)["state"] == "offline"
    assert "Traceback" not in log


# -- 3: broker outage ---------------------------------------------------------------------


def test_broker_outage_loses_no_event_and_delivers_no_expired_unlock(
    mosquitto: MosquittoBroker, tmp_path: Path, daemons: list[Daemon], subscribers: list[Subscriber]
) -> None:
    """The broker is down for OUTAGE_S (two unlock lifetimes) while resident and stranger
    keep passing the camera. The stranger gets unknown events (no person) and never an
    unlock, before, during and after the outage."""
    # 2.8 s a loop at 5 fps (half the frames a second of 10 fps, the same timing): a grant
    # and an unknown event about every 3 s.
    scene = face(RESIDENT, 4) + hallway(3) + face(STRANGER, 4) + hallway(3)
    site = make_site(
        tmp_path, mosquitto.port, people={RESIDENT: [DOOR]}, scene=scene, camera={"fps": 5},
        # Back within seconds of the broker's return. Unlocks live 5 s: those issued in the
        # first OUTAGE_S - 5 s of the outage are expired when it ends. (A shorter TTL is no
        # shortcut: the MQTT expiry is whole seconds, rounded up, so the share of unlocks a
        # controller gets in the second after their exp would grow.)
        mqtt_extra={"reconnect_max_s": 2},
    )  # fmt: skip
    # A persistent session: what the broker accepts after its restart is queued for us
    # even before we have reconnected.
    sub, daemon = watch_and_start(mosquitto, site.config, subscribers, daemons, persistent=True)
    sub.wait_for(lambda s: bool(s.on("unlock")), what="an unlock before the outage")

    mosquitto.stop()
    outage_start = len(daemon.decisions())
    time.sleep(OUTAGE_S)
    during = daemon.decisions()[outage_start:]
    mosquitto.start()

    kinds = {d["kind"] for d in during}
    assert {"granted", "unknown"} <= kinds, f"too few decisions during the outage: {during}"
    during_ids = {d["event_id"] for d in during}

    def received(s: Subscriber) -> set[str]:
        return {e["event_id"] for e in s.events()}

    sub.wait_for(lambda s: during_ids <= received(s), 20, "every outage event")
    # Stop the daemon (it flushes), then every logged decision must have arrived.
    assert daemon.terminate() == 0
    logged = [d["event_id"] for d in daemon.decisions()]
    assert len(logged) == len(set(logged)), "one decision line per event"
    sub.wait_for(lambda s: set(logged) <= received(s), WAIT_S, "every logged event")
    assert received(sub) == set(logged), "events the daemon never logged"
    for message in sub.on("unlock"):
        assert message.at < message.claims()["exp"], f"expired unlock delivered: {message}"
    outage_unlocks = {d["event_id"] for d in during if d["kind"] == "granted"}
    late = [u for u in sub.unlocks() if u["jti"] in outage_unlocks]
    # Unlocks issued early in the outage expired before the broker came back: never sent.
    assert len(late) < len(outage_unlocks), f"expired outage unlocks were delivered: {late}"
    assert_no_stranger_unlock(sub)
    unknown = [e for e in sub.events() if e["decision"] == "unknown"]
    assert len(unknown) >= 3 and all(e["person"] is None for e in unknown)
    assert {e["decision"] for e in sub.events()} == {"granted", "unknown"}
    decided = {(d["kind"], d["person"]) for d in daemon.decisions()}
    assert decided == {("granted", RESIDENT), ("unknown", "None")}, decided


# -- 4: SIGHUP ----------------------------------------------------------------------------


def test_sighup_enrolls_a_new_person_without_restart(
    mosquitto: MosquittoBroker, tmp_path: Path, daemons: list[Daemon], subscribers: list[Subscriber]
) -> None:
    site = make_site(
        tmp_path, mosquitto.port, people={RESIDENT: [DOOR]}, scene=face(LATE_RESIDENT),
        camera={"fps": 5},  # three frames agree in 0.6 s: each wait below is the 1 s cooldown
    )  # fmt: skip
    sub, daemon = watch_and_start(mosquitto, site.config, subscribers, daemons)
    sub.wait_for(lambda s: any(e["decision"] == "unknown" for e in s.events()), what="unknown")
    assert not sub.unlocks()

    write_enrollment(site.dir / "enrollment.yaml", {RESIDENT: [DOOR], LATE_RESIDENT: [DOOR]})
    mark = len(daemon.log())
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_log(r"reloaded: 2 people enrolled", WAIT_S, start=mark)
    assert "signing key changes" not in daemon.log()[mark:]  # keys untouched: no warning
    sub.wait_for(lambda s: granted(s, LATE_RESIDENT), what="grant after reload")
    sub.wait_for(lambda s: any(u["sub"] == LATE_RESIDENT for u in s.unlocks()), what="unlock")
    assert daemon.proc.poll() is None and daemon.pid == daemon.proc.pid
    assert daemon.log().count("ready: models loaded") == 1, "the daemon restarted"

    # A reload that renames the door keeps the running door (cameras change on restart).
    original = site.config.read_text()
    renamed = original.replace(f"door: '{DOOR}'", "door: 'side'")
    assert renamed != original
    site.config.write_text(renamed)
    mark = len(daemon.log())
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_log(r"cameras\[0\]\.door changed; needs a restart", WAIT_S, start=mark)
    daemon.wait_log(r"reloaded: 2 people enrolled", WAIT_S, start=mark)
    # A broken config on reload is refused; the door keeps working as before.
    broken = original.replace("recognition: {", "recognition: {threshold: 5, ")
    assert broken != original
    site.config.write_text(broken)
    mark = len(daemon.log())
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_log(r"reload failed, keeping the previous configuration", WAIT_S, start=mark)
    after = time.time()
    sub.wait_for(lambda s: granted(s, LATE_RESIDENT, after=after), what="grant after bad reload")
    # A new key on reload is not taken (keys change on restart), and the log says so.
    site.config.write_text(original)
    write_unlock_key(site.key_file)
    mark = len(daemon.log())
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_log(r"signing key changes need a restart", WAIT_S, start=mark)
    after = time.time()
    sub.wait_for(
        lambda s: any(u["sub"] == LATE_RESIDENT and u["iat"] > after for u in s.unlocks()),
        what="unlock after key change",
    )
    newest = [u for u in sub.on("unlock") if u.claims()["iat"] > after][-1]
    assert UnlockVerifier(site.key, DOOR, clock=lambda: newest.at).verify(newest.payload)
    # A new camera source applies live (that camera restarts); a model setting is reported
    # as needing a restart.
    write_folder(site.dir / "camera2", face(RESIDENT))
    live = original.replace("source: 'camera/'", "source: 'camera2/'")
    live = live.replace("threads: 1}", "threads: 2}")  # make_site's sites run one thread
    assert live.count("camera2/") == 1 and "threads: 2}" in live
    site.config.write_text(live)
    mark = len(daemon.log())
    after = time.time()
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_log(r"reload: cameras\[0\]\.source\S* changed; applied", WAIT_S, start=mark)
    daemon.wait_log(r"reload: models\.threads changed; needs a restart", WAIT_S, start=mark)
    sub.wait_for(lambda s: granted(s, RESIDENT, after=after), what="grant from the new source")
    assert daemon.log().count("ready: models loaded") == 1, "the daemon restarted"
    assert daemon.proc.poll() is None
    assert daemon.terminate() == 0


@pytest.mark.serial
def test_systemd_ready_and_watchdog_only_while_frames_flow(
    mosquitto: MosquittoBroker, tmp_path: Path, daemons: list[Daemon]
) -> None:
    site = make_site(tmp_path, mosquitto.port, people={RESIDENT: [DOOR]}, scene=hallway(5))
    site.config.write_text(site.config.read_text() + "watchdog: {stall_s: 1.0}\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        daemon = Daemon(site.config, env={"NOTIFY_SOCKET": str(notify.path)})
        daemons.append(daemon)
        ready = notify.wait_for("READY=1", START_S)
        assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for _, m in notify.messages)
        notify.wait_for("WATCHDOG=1", 5.0, after=ready)

        away = site.dir / "camera-unplugged"
        site.camera.rename(away)
        unplugged = time.monotonic()
        notify.collect(4.0)
        # stall_s (1 s) plus one ping interval after the last frame: silence from then on.
        late = [at for at, m in notify.messages if m == "WATCHDOG=1" and at > unplugged + 2.5]
        assert late == [], "watchdog pinged while the camera delivered nothing"

        away.rename(site.camera)
        notify.wait_for("WATCHDOG=1", WAIT_S, after=time.monotonic())
        assert daemon.terminate() == 0
        notify.wait_for("STOPPING=1", 5.0)
    finally:
        notify.close()


# -- 10: TLS + password -------------------------------------------------------------------


@pytest.mark.skipif(bool(tools_missing()), reason=f"missing {tools_missing()}")
def test_daemon_over_tls_with_password_unlocks_the_authorised_controller(
    tmp_path: Path, daemons: list[Daemon], subscribers: list[Subscriber]
) -> None:
    with tls_broker(tmp_path / "tls") as broker:
        password = tmp_path / "mqtt.password"
        password.write_text(broker.passwords["facegate"] + "\n")
        password.chmod(0o600)
        cert, cert_key = broker.client_cert("facegate")
        site = make_site(
            tmp_path / "site", broker.port, people={RESIDENT: [DOOR]}, scene=face(RESIDENT),
            mqtt_extra={
                "username": "facegate", "password_file": str(password),
                "tls": {"ca_file": str(broker.ca_file), "cert_file": str(cert),
                        "key_file": str(cert_key)},
            },
        )  # fmt: skip
        controller = tls_subscriber(broker, "door-front")
        subscribers.append(controller)
        daemon = Daemon(site.config)
        daemons.append(daemon)
        daemon.wait_ready()
        controller.wait_for(lambda s: bool(s.on("unlock")), what="unlock over TLS")
        unlock = UnlockVerifier(site.key, DOOR).verify(controller.on("unlock")[0].payload)
        assert unlock.person == RESIDENT
        assert daemon.terminate() == 0


def tls_subscriber(broker: TlsBroker, user: str) -> Subscriber:
    def configure(client: Client) -> None:
        client.tls_set(ca_certs=str(broker.ca_file))
        client.username_pw_set(user, broker.passwords[user])

    return Subscriber(broker.host, broker.port, [f"{PREFIX}/{DOOR}/#"], configure=configure)


# -- 11: bad config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recognition", "mqtt_extra", "field"),
    [
        ({"threshold": 1.5}, None, "threshold"),
        ({"confirm_frames": "three"}, None, "confirm_frames"),
        ({"confirm_faces": 3}, None, "confirm_faces"),
        (None, {"port": 70000}, "port"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_bad_config_exits_2_naming_file_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    recognition: dict[str, object] | None,
    mqtt_extra: dict[str, object] | None,
    field: str,
) -> None:
    """The command's own entry point, in-process (the process itself: the test below)."""
    site = make_site(
        tmp_path, 1, people={RESIDENT: [DOOR]}, scene=hallway(1),
        recognition=recognition, mqtt_extra=mqtt_extra,
    )  # fmt: skip
    assert main([command, "--config", str(site.config)]) == 2
    out, err = capsys.readouterr()
    assert str(site.config) in err or "facegate.yaml" in err
    assert field in err, err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_bad_config_process_exits_2_naming_file_and_field(tmp_path: Path, command: str) -> None:
    site = make_site(
        tmp_path, 1, people={RESIDENT: [DOOR]}, scene=hallway(1), mqtt_extra={"port": 70000}
    )
    done = subprocess.run(
        [sys.executable, "-m", "facegate", command, "--config", str(site.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert str(site.config) in done.stderr or "facegate.yaml" in done.stderr
    assert "port" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
