"""The daemon's local control channel: walk-up enrollment asks it for photos, then a reload.

Never the network: a Unix socket (`control.socket`, under the runtime folder), mode 0660,
owned by the daemon's user and group, so root and members of the facegate group reach it
and nobody else. One JSON object per line each way; one request per connection:

    {"op": "capture", "door": D, "person": ID, "images": N, "timeout_s": T}
        -> {"type": "progress", ...}* then {"type": "captured", "photos": [base64 JPEG]}
           or {"type": "refused", "code": ..., "message": ...}
    {"op": "reload", "person": ID}
        -> {"type": "reloaded", "ok": bool, "enrolled": bool}

A listener thread accepts connections and each connection's thread hands its request to
the camera loop through a queue; the loop starts captures between frames, feeds them each
processed frame of their door (`frame`), and answers reloads after it reloaded. So the
loop stays the only user of the face engine, and a capture costs the door nothing but
the crops of the frames it keeps: the door goes on deciding while someone enrolls.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from facegate.capture import (
    Captured,
    CaptureRequest,
    CaptureSession,
    Outcome,
    Progress,
    Refusal,
    Refused,
)
from facegate.config import FacegateConfig
from facegate.enroll import photo_gate
from facegate.errors import BadInputError, ConfigError
from facegate.mqtt.bus import DoorBus
from facegate.pipeline import Recognition, StepResult
from facegate.vision.engine import FaceEngine
from facegate.vision.quality import Gate, PhotoGate
from facegate.vision.types import ImageArray

logger = logging.getLogger(__name__)

SOCKET_MODE: Final = 0o660
MAX_REQUEST_BYTES: Final = 4096
#: A client must send its request this soon after connecting.
REQUEST_READ_S: Final = 5.0
#: Replies are a few JPEGs: a capture of 20 photos is about 1-2 MB of JSON.
MAX_REPLY_BYTES: Final = 32 * 1024 * 1024
FINAL_TYPES: Final = frozenset({"captured", "refused", "reloaded", "error"})
PERSON_ID: Final = re.compile(r"^[a-z0-9_-]{1,64}$")

PublishPrompt = Callable[[str, str | None], None]


@dataclass
class _Job:
    """One connection's request and the way back to it."""

    op: str
    message: dict[str, Any]
    peer: str
    replies: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def reply(self, message: dict[str, Any]) -> None:
        self.replies.put(message)


@dataclass
class _Capture:
    job: _Job
    session: CaptureSession


def start_control(config: FacegateConfig, engine: FaceEngine, bus: DoorBus) -> ControlServer | None:
    """The started control server when `control.enabled`, else None. A socket that cannot
    be made costs walk-up enrollment, never the door: logged, and the daemon runs on."""
    if not config.control.enabled:
        return None
    server = ControlServer(
        config.control.socket,
        config.door_ids,
        engine,
        lambda state: photo_gate(state.config),
        bus.publish_prompt,
    )
    try:
        server.start()
    except ConfigError as exc:
        logger.error("walk-up enrollment unavailable: %s", exc)
        return None
    return server


class ControlServer:
    """The daemon's end; the loop thread calls `between_frames`, `frame`, `reloaded`."""

    def __init__(
        self,
        path: Path,
        doors: tuple[str, ...],
        engine: FaceEngine,
        photo_gate: Callable[[Recognition], PhotoGate],
        publish_prompt: PublishPrompt,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._doors = doors
        self._engine = engine
        self._photo_gate = photo_gate
        self._publish_prompt = publish_prompt
        self._clock = clock
        self._inbox: queue.Queue[_Job] = queue.Queue()
        self._captures: dict[str, _Capture] = {}
        self._reloads: list[_Job] = []
        self._state: Recognition | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    # -- lifecycle (loop thread) ---------------------------------------------------------------

    def start(self) -> None:
        """Create the socket (mode 0660) and start listening; ConfigError naming
        control.socket if it cannot be created or another daemon serves it."""
        self._listener = _listen(self.path)
        self._thread = threading.Thread(target=self._accept, name="control", daemon=True)
        self._thread.start()
        logger.info("control socket %s ready (walk-up enrollment)", self.path)

    def close(self) -> None:
        """Answer what is pending ("stopped"), clear prompts, remove the socket."""
        self._closed.set()
        for door in list(self._captures):
            self._end(door, Refused(Refusal.STOPPED, "the daemon is stopping"))
        for job in [*self._reloads, *_drain(self._inbox)]:
            job.reply({"type": "error", "message": "the daemon is stopping"})
        self._reloads = []
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # -- the loop's hooks ------------------------------------------------------------------------

    def between_frames(self, state: Recognition) -> bool:
        """Start the requests that arrived and end captures whose time ran out; True when a
        client asked for a reload (the loop then reloads and calls `reloaded`)."""
        self._state = state
        for job in _drain(self._inbox):
            if job.op == "reload":
                self._reloads.append(job)
            elif job.op == "capture":
                self._start_capture(job, state)
            else:
                job.reply({"type": "error", "message": f"unknown op {job.op!r}"})
        now = self._clock()
        for door, capture in list(self._captures.items()):
            if capture.job.cancelled.is_set():
                logger.info("capture at %s: the client left", door)
                self._end(door, None)
            elif (expired := capture.session.expire(now)) is not None:
                self._end(door, expired)  # also without frames: a dead camera
        return bool(self._reloads)

    def capturing(self, door: str) -> bool:
        """A capture runs at `door` (its frames are then embedded whole)."""
        return door in self._captures

    def frame(self, door: str, image: ImageArray, result: StepResult) -> None:
        """A processed frame of `door`: feed its capture, if one runs there."""
        capture = self._captures.get(door)
        if capture is None:
            return
        outcome = capture.session.feed(image, result.faces, self._clock())
        if outcome is None:
            return
        if isinstance(outcome, Progress):
            self._prompt(door, outcome.prompt)
            capture.job.reply(_progress_message(outcome))
        else:
            self._end(door, outcome)

    def reloaded(self, state: Recognition, ok: bool) -> None:
        """The loop reloaded (ok) or kept the previous state (not ok): tell who asked."""
        self._state = state
        for job in self._reloads:
            person = job.message.get("person")
            enrolled = isinstance(person, str) and person in state.matcher
            job.reply({"type": "reloaded", "ok": ok, "enrolled": enrolled})
        self._reloads = []

    # -- captures --------------------------------------------------------------------------------

    def _start_capture(self, job: _Job, state: Recognition) -> None:
        try:
            request = CaptureRequest.parse(job.message)
        except ValueError as exc:
            job.reply(_refused(Refused(Refusal.BAD_REQUEST, str(exc))))
            return
        if not PERSON_ID.fullmatch(request.person):
            job.reply(_refused(Refused(Refusal.BAD_REQUEST, "person: [a-z0-9_-], 1..64")))
            return
        if request.door not in self._doors:
            message = f"unknown door {request.door!r} (doors: {', '.join(self._doors)})"
            job.reply(_refused(Refused(Refusal.UNKNOWN_DOOR, message)))
            return
        if request.door in self._captures:
            message = f"a capture is already running at door {request.door}"
            job.reply(_refused(Refused(Refusal.BUSY, message)))
            return
        from facegate import walkup  # walkup imports this module

        gate = self._photo_gate(state)
        session = CaptureSession(
            request,
            state.matcher,
            state.config.recognition.threshold,
            lambda jpeg: photo_problem(self._engine, gate, jpeg),
            self._clock(),
            # A print held to the camera must not enroll anyone: the photos need a live track.
            liveness=walkup.capture_liveness(state.config, request.door),
        )
        self._captures[request.door] = _Capture(job, session)
        logger.info(
            "capture at %s for %s: %d photos within %g s (asked by %s)",
            request.door, request.person, request.images, request.timeout_s, job.peer,
        )  # fmt: skip
        first = "look straight at the camera"
        self._prompt(request.door, first)
        job.reply(_progress_message(Progress(0, request.images, first, 0.0)))

    def _end(self, door: str, outcome: Outcome | None) -> None:
        capture = self._captures.pop(door)
        capture.session.cancel()
        self._prompt(door, None)
        if isinstance(outcome, Captured):
            logger.info("capture at %s: %d photos", door, len(outcome.photos))
            photos = [base64.b64encode(p).decode("ascii") for p in outcome.photos]
            capture.job.reply(
                {"type": "captured", "photos": photos, "elapsed_s": round(outcome.elapsed_s, 2)}
            )
        elif isinstance(outcome, Refused):
            logger.info("capture at %s refused: %s", door, outcome.message)
            capture.job.reply(_refused(outcome))

    def _prompt(self, door: str, prompt: str | None) -> None:
        try:
            self._publish_prompt(door, prompt)
        except Exception:  # a prompt is a courtesy: never let it break the loop
            logger.exception("prompt for door %s not published", door)

    # -- connections (listener and connection threads) -----------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._closed.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                logger.exception("control socket: accept failed")
                time.sleep(0.5)
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="control-client", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            peer = _peer(conn)
            try:
                job = _read_request(conn, peer)
            except (OSError, ValueError) as exc:
                _send(conn, {"type": "error", "message": f"bad request: {exc}"})
                return
            if self._closed.is_set():
                _send(conn, {"type": "error", "message": "the daemon is stopping"})
                return
            self._inbox.put(job)
            self._relay(conn, job)

    def _relay(self, conn: socket.socket, job: _Job) -> None:
        """Send the loop's replies until the final one; a client that left cancels."""
        while True:
            try:
                message = job.replies.get(timeout=1.0)
            except queue.Empty:
                if _hung_up(conn):
                    job.cancelled.set()
                    return
                continue
            if not _send(conn, message):
                job.cancelled.set()
                return
            if message.get("type") in FINAL_TYPES:
                return


def _drain(inbox: queue.Queue[_Job]) -> list[_Job]:
    jobs = []
    while True:
        try:
            jobs.append(inbox.get_nowait())
        except queue.Empty:
            return jobs


def _progress_message(progress: Progress) -> dict[str, Any]:
    return {
        "type": "progress",
        "have": progress.have,
        "need": progress.need,
        "prompt": progress.prompt,
        "elapsed_s": round(progress.elapsed_s, 2),
    }


def _refused(refused: Refused) -> dict[str, Any]:
    return {"type": "refused", "code": str(refused.code), "message": refused.message}


def photo_problem(engine: FaceEngine, gate: Gate, jpeg: bytes) -> str | None:
    """Why this photo would not enroll (the photo gate, exactly one face), or None."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return "unreadable"
    try:
        engine.encode_one(np.ascontiguousarray(image[:, :, ::-1]), "capture", gate)
    except BadInputError as exc:
        return exc.detail
    return None


def _read_request(conn: socket.socket, peer: str) -> _Job:
    conn.settimeout(REQUEST_READ_S)
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(MAX_REQUEST_BYTES)
        if not chunk:
            raise ValueError("connection closed before a request")
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"request over {MAX_REQUEST_BYTES} bytes")
    conn.settimeout(None)
    message = json.loads(data.split(b"\n", 1)[0])
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError('a JSON object with "op" is required')
    return _Job(message["op"], message, peer)


def _send(conn: socket.socket, message: Mapping[str, Any]) -> bool:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        return False
    return True


def _hung_up(conn: socket.socket) -> bool:
    """Whether the client closed its end (it sends nothing after its request)."""
    try:
        conn.setblocking(False)
        try:
            return conn.recv(1, socket.MSG_PEEK) == b""
        finally:
            conn.setblocking(True)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _peer(conn: socket.socket) -> str:
    """Who connected, for the log (SO_PEERCRED: pid, uid, gid)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return "unknown peer"
    pid, uid, gid = struct.unpack("3i", creds)
    return f"uid {uid} (pid {pid})"


def _listen(path: Path) -> socket.socket:
    """Bind `path` with mode 0660 from the first moment (bound under a temporary name,
    chmod, then renamed into place); a stale socket of a dead daemon is replaced, a live
    one is refused."""
    if not path.parent.is_dir():
        raise ConfigError(path, f"folder {path.parent} does not exist", field="control.socket")
    if path.exists() or path.is_symlink():
        if _answers(path):
            raise ConfigError(path, "another daemon is listening here", field="control.socket")
        if not path.is_socket():
            raise ConfigError(path, "exists and is not a socket", field="control.socket")
        path.unlink()
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        listener.bind(str(temp))
        os.chmod(temp, SOCKET_MODE)
        os.replace(temp, path)
        listener.listen(4)
    except OSError as exc:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise ConfigError(
            path, f"cannot create the socket: {exc.strerror or exc}", field="control.socket"
        ) from None
    return listener


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


# --- the client (facegate enroll --capture) -------------------------------------------------


class ControlClient:
    """The CLI's end: one request per connection, replies as they come."""

    def __init__(self, path: Path, reply_timeout_s: float) -> None:
        self.path = path
        self._timeout_s = reply_timeout_s

    def request(self, message: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Send `message`, yield each reply until the final one. BadInputError naming the
        socket when no daemon listens or this user may not use it."""
        with self._connect() as conn:
            conn.sendall(json.dumps(message).encode() + b"\n")
            conn.settimeout(self._timeout_s)
            buffer = b""
            while True:
                while b"\n" not in buffer:
                    chunk = self._recv(conn)
                    buffer += chunk
                    if len(buffer) > MAX_REPLY_BYTES:
                        raise BadInputError(self.path, "the daemon's reply is too large")
                line, buffer = buffer.split(b"\n", 1)
                reply = json.loads(line)
                yield reply
                if reply.get("type") in FINAL_TYPES:
                    return

    def _connect(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(self.path))
        except PermissionError:
            conn.close()
            raise BadInputError(
                self.path,
                "permission denied: run as root or as a member of the facegate group",
                field="control.socket",
            ) from None
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            raise BadInputError(
                self.path,
                "no running daemon listens here (is facegate running, with control.enabled?);"
                " or give --source to capture from a camera without the daemon",
                field="control.socket",
            ) from None
        except OSError as exc:
            conn.close()
            raise BadInputError(
                self.path, f"cannot connect: {exc.strerror or exc}", field="control.socket"
            ) from None
        return conn

    def _recv(self, conn: socket.socket) -> bytes:
        try:
            chunk = conn.recv(1 << 16)
        except TimeoutError:
            raise BadInputError(self.path, "the daemon stopped answering") from None
        if not chunk:
            raise BadInputError(self.path, "the daemon closed the connection (see its log)")
        return chunk
