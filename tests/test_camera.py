"""Frame sources and the latest-frame grabber, with real files and injected faults."""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facegate.camera import (
    SOURCE_TYPES,
    Backoff,
    DeviceSource,
    Frame,
    FrameSource,
    ImageFolderSource,
    LatestFrameGrabber,
    Picamera2Source,
    RGBImage,
    StreamSource,
    VideoFileSource,
    make_source,
    source_from_config,
)
from facegate.config import load_config
from facegate.errors import CameraError, ConfigError
from facegate.redact import redact_url

HAVE_PICAMERA2 = importlib.util.find_spec("picamera2") is not None
RED = (255, 0, 0)


def _read_all(source: FrameSource, limit: int = 1000) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < limit and (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def _solid(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture
def color_folder(tmp_path: Path) -> Path:
    """Three images whose file names sort differently from their creation order."""
    folder = tmp_path / "frames"
    folder.mkdir()
    _solid((0, 0, 200)).save(folder / "c.png")
    _solid((200, 0, 0)).save(folder / "a.png")
    _solid((0, 200, 0)).save(folder / "b.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _dominant(frame: Frame) -> int:
    return int(np.argmax(frame.image.reshape(-1, 3).mean(axis=0)))


# -- image folder ---------------------------------------------------------------------------


def test_folder_reads_sorted_rgb_frames_then_ends(color_folder: Path) -> None:
    with ImageFolderSource(color_folder, fps=None, name="front") as source:
        frames = _read_all(source)
    assert [_dominant(f) for f in frames] == [0, 1, 2]  # a=red, b=green, c=blue
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.source == "front" and f.image.dtype == np.uint8 for f in frames)
    assert all(f.image.shape == (6, 8, 3) for f in frames)
    assert frames[0].ts < frames[1].ts < frames[2].ts


def test_folder_loops(color_folder: Path) -> None:
    with ImageFolderSource(color_folder, fps=None, loop=True) as source:
        frames = _read_all(source, limit=7)
    assert [_dominant(f) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert [f.index for f in frames] == list(range(7))


def test_folder_is_paced_at_fps(color_folder: Path) -> None:
    with ImageFolderSource(color_folder, fps=20, loop=True) as source:
        start = time.monotonic()
        frames = _read_all(source, limit=6)
        elapsed = time.monotonic() - start
    assert len(frames) == 6
    assert 5 * 0.05 * 0.8 <= elapsed < 5 * 0.05 + 1.0


def test_folder_applies_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (10, 10, 10))
    image.paste((250, 0, 0), (0, 0, 10, 20))  # red on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer rotates 90 degrees clockwise
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with ImageFolderSource(tmp_path, fps=None) as source:
        frame = source.read()
    assert frame is not None
    assert frame.image.shape == (40, 20, 3)
    assert frame.image[2, 10, 0] > 200  # the left edge is now the top


def test_folder_converts_rgba_and_gray_to_rgb(tmp_path: Path) -> None:
    Image.new("RGBA", (5, 4), (0, 255, 0, 128)).save(tmp_path / "1.png")
    Image.new("L", (5, 4), 77).save(tmp_path / "2.png")
    with ImageFolderSource(tmp_path, fps=None) as source:
        rgba, gray = _read_all(source)
    assert rgba.image.shape == gray.image.shape == (4, 5, 3)
    # Half-transparent green on white, as enrollment (load_image) and a viewer show it.
    assert tuple(rgba.image[0, 0]) == (127, 255, 127)
    assert tuple(gray.image[0, 0]) == (77, 77, 77)


def test_folder_skips_corrupt_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "0.jpg").write_bytes(b"not a jpeg")
    _solid(RED).save(tmp_path / "1.png")
    with caplog.at_level(logging.WARNING), ImageFolderSource(tmp_path, fps=None) as source:
        frames = _read_all(source)
    assert len(frames) == 1
    assert "0.jpg" in caplog.text


def test_folder_of_only_corrupt_images_raises(tmp_path: Path) -> None:
    (tmp_path / "0.jpg").write_bytes(b"junk")
    with ImageFolderSource(tmp_path, fps=None, loop=True) as source:
        with pytest.raises(CameraError, match="no readable image"):
            source.read()


def test_missing_or_empty_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(CameraError, match="nowhere"):
        ImageFolderSource(missing).open()
    with pytest.raises(CameraError, match="holds no images"):
        ImageFolderSource(tmp_path).open()


def test_rotate_is_clockwise(tmp_path: Path) -> None:
    image = Image.new("RGB", (3, 2), (0, 0, 0))
    image.putpixel((0, 1), RED)  # bottom-left
    image.save(tmp_path / "x.png")
    with ImageFolderSource(tmp_path, fps=None, rotate=90) as source:
        frame = source.read()
    assert frame is not None
    assert frame.image.shape == (3, 2, 3)
    assert tuple(frame.image[0, 0]) == RED  # bottom-left turns into top-left
    with pytest.raises(ValueError, match="rotate"):
        ImageFolderSource(tmp_path, rotate=45)


# -- video file -----------------------------------------------------------------------------


def _write_video(path: Path, frames: int, fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    red_bgr = np.zeros((48, 64, 3), np.uint8)
    red_bgr[..., 2] = 255
    for _ in range(frames):
        writer.write(red_bgr)
    writer.release()
    return path


@pytest.fixture
def red_video(tmp_path: Path) -> Path:
    return _write_video(tmp_path / "red.avi", frames=12)


def test_video_file_reads_every_frame_as_rgb(red_video: Path) -> None:
    with VideoFileSource(red_video, fps=1000) as source:
        frames = _read_all(source)
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    red, green, blue = frames[0].image.reshape(-1, 3).mean(axis=0)
    assert red > 240 and green < 15 and blue < 15
    assert frames[0].image.shape == (48, 64, 3)


def test_video_file_is_paced_in_real_time(red_video: Path) -> None:
    with VideoFileSource(red_video) as source:
        assert source.fps == pytest.approx(25.0)
        start = time.monotonic()
        frames = _read_all(source, limit=6)
        elapsed = time.monotonic() - start
    assert len(frames) == 6
    assert 5 / 25 * 0.8 <= elapsed < 5 / 25 + 1.0


def test_video_file_loops(red_video: Path) -> None:
    with VideoFileSource(red_video, fps=1000, loop=True) as source:
        frames = _read_all(source, limit=30)
    assert len(frames) == 30
    assert frames[-1].index == 29


def test_missing_or_undecodable_video_names_it(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="missing.mp4"):
        VideoFileSource(tmp_path / "missing.mp4").open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 100)
    with pytest.raises(CameraError, match="junk.mp4"):
        VideoFileSource(junk).open()


def test_missing_device_says_what_to_check() -> None:
    with pytest.raises(CameraError, match="video group"):
        DeviceSource("/dev/video-facegate-test").open()


def test_stream_url_credentials_are_not_shown() -> None:
    source = StreamSource("rtsp://admin:s3cret@10.0.0.9:554/live")
    assert "s3cret" not in source.describe()
    assert "s3cret" not in source.name


# -- picamera2 ------------------------------------------------------------------------------


@pytest.mark.skipif(HAVE_PICAMERA2, reason="picamera2 is installed here")
def test_picamera2_absent_gives_apt_hint() -> None:
    with pytest.raises(CameraError, match=r"apt install python3-picamera2.*system-site-packages"):
        Picamera2Source("picamera2").open()


@pytest.mark.pi
@pytest.mark.skipif(not HAVE_PICAMERA2, reason="needs picamera2 and a Raspberry Pi camera")
def test_picamera2_captures_rgb() -> None:
    with Picamera2Source("picamera2", fps=10) as source:
        frame = source.read()
    assert frame is not None
    assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8


# -- factory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    kind: str
    value: str | int | Path


@dataclass(frozen=True)
class _Camera:
    door: str
    source: _Source
    fps: float = 10.0
    loop: bool = False
    rotate: int = 0


def test_factory_maps_every_kind(color_folder: Path) -> None:
    assert set(SOURCE_TYPES) == {"picamera2", "device", "url", "file", "folder"}
    assert isinstance(make_source("device", 0), DeviceSource)
    assert isinstance(make_source("url", "http://cam/mjpg"), StreamSource)
    assert isinstance(make_source("file", "x.mp4"), VideoFileSource)
    assert isinstance(make_source("picamera2", "picamera2"), Picamera2Source)
    source = source_from_config(_Camera("front", _Source("folder", color_folder), rotate=180))
    assert isinstance(source, ImageFolderSource) and source.name == "front"
    with pytest.raises(ValueError, match="unknown camera source kind"):
        make_source("webcam", 0)


# -- backoff --------------------------------------------------------------------------------


def test_backoff_doubles_caps_and_resets() -> None:
    backoff = Backoff(min_s=0.5, max_s=30, factor=2)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    with pytest.raises(ValueError):
        Backoff(min_s=0)


# -- grabber --------------------------------------------------------------------------------


class ScriptedSource(FrameSource):
    """A fast synthetic camera with injectable faults."""

    def __init__(
        self,
        *,
        frames: int | None = None,
        fail_after: int | None = None,
        block_after: int | None = None,
        fail_open: bool = False,
        period_s: float = 0.002,
    ) -> None:
        super().__init__(name="scripted")
        self.frames, self.fail_after, self.block_after = frames, fail_after, block_after
        self.fail_open, self.period_s = fail_open, period_s
        self.release = threading.Event()
        self.closed = threading.Event()
        self.served = 0
        self._image: RGBImage = np.zeros((4, 4, 3), np.uint8)

    def _open(self) -> None:
        if self.fail_open:
            raise CameraError("scripted: camera unplugged")

    def _read(self) -> RGBImage | None:
        if self.served == self.fail_after:
            raise CameraError("scripted: cable pulled")
        if self.served == self.block_after:
            self.release.wait(10)  # a driver call that hangs
        if self.frames is not None and self.served >= self.frames:
            return None
        time.sleep(self.period_s)
        self.served += 1
        return self._image

    def _close(self) -> None:
        self.closed.set()


class Script:
    """A source factory that hands out prepared sources, then healthy ones."""

    def __init__(self, *sources: ScriptedSource) -> None:
        self.pending = list(sources)
        self.made: list[ScriptedSource] = []

    def __call__(self) -> ScriptedSource:
        source = self.pending.pop(0) if self.pending else ScriptedSource()
        self.made.append(source)
        return source


FAST_BACKOFF = Backoff(min_s=0.01, max_s=0.05)


def _collect(grabber: LatestFrameGrabber, count: int, timeout_s: float = 5.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < count and time.monotonic() < deadline:
        frame = grabber.get(timeout=0.5)
        if frame is not None:
            frames.append(frame)
        elif grabber.finished:
            break
    return frames


def test_grabber_keeps_only_the_newest_frame() -> None:
    script = Script()
    with LatestFrameGrabber(script, backoff=FAST_BACKOFF) as grabber:
        frames = []
        for _ in range(5):
            time.sleep(0.05)  # a slow consumer: about 25 frames arrive per get()
            frame = grabber.get(timeout=1)
            assert frame is not None
            frames.append(frame)
        assert grabber.frames_dropped > 0
        assert grabber.frames_read >= grabber.frames_dropped + len(frames)
        assert grabber.connected
        last_ts = grabber.last_frame_ts
        assert last_ts is not None and last_ts >= frames[-1].ts
    indices = [f.index for f in frames]
    assert all(b > a for a, b in zip(indices, indices[1:], strict=False))
    assert script.made[0].closed.is_set()


def test_grabber_reopens_a_failing_source(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(ScriptedSource(fail_after=3), ScriptedSource(fail_open=True), ScriptedSource())
    with caplog.at_level(logging.DEBUG, logger="facegate.camera.grabber"):
        with LatestFrameGrabber(script, backoff=FAST_BACKOFF) as grabber:
            frames = _collect(grabber, 10)
    assert len(frames) == 10
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    assert len(script.made) >= 3 and script.made[0].closed.is_set()
    levels = [r.levelno for r in caplog.records if "reconnecting" in r.message]
    assert levels[:2] == [logging.WARNING, logging.DEBUG]
    assert any("recovered after" in r.message and r.levelno == logging.INFO for r in caplog.records)


def test_grabber_reopens_a_stalled_source() -> None:
    stalled = ScriptedSource(block_after=2)
    script = Script(stalled)
    grabber = LatestFrameGrabber(script, stall_s=0.2, backoff=FAST_BACKOFF)
    with grabber:
        frames = _collect(grabber, 6)
        assert len(frames) == 6
        assert len(script.made) >= 2
        assert not stalled.closed.is_set()  # still stuck in its driver call
        stalled.release.set()
        assert stalled.closed.wait(2)  # the abandoned reader releases its own camera


def test_grabber_finishes_with_a_finite_source() -> None:
    with LatestFrameGrabber(Script(ScriptedSource(frames=3, period_s=0.05))) as grabber:
        frames = _collect(grabber, 10, timeout_s=3)
        assert len(frames) == 3
        assert grabber.finished
        assert grabber.get(timeout=0.1) is None


def test_grabber_stop_is_bounded_and_releases_the_camera() -> None:
    script = Script()
    grabber = LatestFrameGrabber(script)
    grabber.start()
    assert grabber.get(timeout=2) is not None
    start = time.monotonic()
    grabber.stop(timeout_s=2)
    assert time.monotonic() - start < 1
    assert script.made[0].closed.is_set()
    assert not grabber.connected
    assert grabber.get(timeout=0.1) is None


def test_grabber_with_a_real_video_file(red_video: Path) -> None:
    def factory() -> FrameSource:
        return VideoFileSource(red_video, fps=100)

    with LatestFrameGrabber(factory) as grabber:
        frames = _collect(grabber, 100, timeout_s=3)
        assert grabber.finished
        assert grabber.frames_read == 12
    assert 1 <= len(frames) <= 12
    assert frames[-1].image[0, 0, 0] > 240


class BuggySource(ScriptedSource):
    def _read(self) -> RGBImage | None:
        raise ZeroDivisionError("a bug in a backend")


def test_grabber_survives_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(BuggySource(), BuggySource())
    with caplog.at_level(logging.DEBUG, logger="facegate.camera.grabber"):
        with LatestFrameGrabber(script, backoff=FAST_BACKOFF) as grabber:
            assert len(_collect(grabber, 3)) == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_grabber_resets_backoff_only_once_the_source_stays_up() -> None:
    backoff = Backoff(min_s=0.01, max_s=0.04)
    script = Script(ScriptedSource(fail_after=1), ScriptedSource(fail_after=1))
    with LatestFrameGrabber(script, stall_s=0.5, backoff=backoff) as grabber:
        assert len(_collect(grabber, 2)) == 2
        deadline = time.monotonic() + 2
        while len(script.made) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Two flapping sources (one frame each) have pushed the backoff up ...
        time.sleep(0.05)
        with grabber._cond:
            assert backoff.next_delay() == 0.04
        # ... and a third that keeps delivering for stall_s brings it back down.
        time.sleep(0.8)
        with grabber._cond:
            assert backoff.next_delay() == 0.01


# -- credentials never reach a log line or an error message (issue 11, finding 7) ----------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("rtsp://admin:s3cret@cam/live", "rtsp://admin:***@cam/live"),
        ("rtsp://admin:p@ss@cam:554/", "rtsp://admin:***@cam:554/"),  # raw "@": the last one
        ("rtsp://admin:pa/ss@cam/live", "rtsp://admin:***@cam/live"),  # raw "/" in it
        ("rtsp://:s3cret@cam/", "rtsp://:***@cam/"),
        ("rtsp://cam/stream?user=admin&pwd=s3cret", "rtsp://cam/stream?user=admin&pwd=***"),
        ("http://cam/a.cgi?PassWord=s3cret&ch=1", "http://cam/a.cgi?PassWord=***&ch=1"),
        (
            "http://cam/a?api_key=k1;token=t2&apiKey=k3",
            "http://cam/a?api_key=***;token=***&apiKey=***",
        ),
        ("http://cam/a#access_token=s3cret&state=7", "http://cam/a#access_token=***&state=7"),
        (
            "https://s3/a?X-Amz-Signature=ab%3D&X-Amz-Date=1",
            "https://s3/a?X-Amz-Signature=***&X-Amz-Date=1",
        ),
        ("http://cam/a?accesstoken=s3cret&sig=s3cret", "http://cam/a?accesstoken=***&sig=***"),
        ("http://cam/a?p%77d=s3cret&auth=s3cret", "http://cam/a?p%77d=***&auth=***"),
        ("http://cam/a?credentials=s3cret&passwd=", "http://cam/a?credentials=***&passwd="),
        ("'rtsp://cam/s?pwd=s3cret'", "'rtsp://cam/s?pwd=***'"),  # a repr keeps its quotes
        ("open rtsp://u:s3cret@cam/: is it on?", "open rtsp://u:***@cam/: is it on?"),
        ("a rtsp://a:s3cret@x/ b http://y/?key=s3cret", "a rtsp://a:***@x/ b http://y/?key=***"),
        # Left alone: user names, hosts, ports, paths, other parameters, non-URLs.
        ("rtsp://admin@cam/live?keyframe=1&user=bob", "rtsp://admin@cam/live?keyframe=1&user=bob"),
        ("http://cam:8080/snap@2x.jpg", "http://cam:8080/snap@2x.jpg"),
        ("rtsp://[fe80::1]:554/live?channel=1", "rtsp://[fe80::1]:554/live?channel=1"),
        ("/dev/video0", "/dev/video0"),
    ],
)
def test_redact_url(text: str, shown: str) -> None:
    assert redact_url(text) == shown


def _closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://127.0.0.1:{port}/stream?user=admin&pwd=s3cret",
        "rtsp://admin:p@s3cret@127.0.0.1:{port}/",
    ],
)
def test_stream_credentials_never_reach_a_log_line(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera that refuses connections is retried and logged at WARNING, then DEBUG:
    none of these lines, nor any other, shows the password."""
    source_url = url.format(port=_closed_port())
    with caplog.at_level(logging.DEBUG):
        with LatestFrameGrabber(lambda: StreamSource(source_url), backoff=FAST_BACKOFF):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _retries(caplog) < 3:
                time.sleep(0.05)
    assert _retries(caplog) >= 3
    texts = [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    assert not [text for text in texts if "s3cret" in text]
    assert any("127.0.0.1" in text and "***" in text for text in texts)


def _retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum("reconnecting" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "source", ["ftp://admin:p@ss-s3cret@cam/x", "ftp://cam/x?user=admin&pwd=s3cret"]
)
def test_config_errors_do_not_echo_camera_secrets(tmp_path: Path, source: str) -> None:
    path = tmp_path / "facegate.yaml"
    path.write_text(f"device: x\ncameras:\n  - door: front\n    source: {source}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "cameras[0].source" in message and "(got 'ftp://" in message
    assert "s3cret" not in message


class LeakySource(ScriptedSource):
    def _read(self) -> RGBImage | None:
        raise RuntimeError("driver failed on rtsp://admin:s3cret@cam/live?token=s3cret")


def test_a_library_error_quoting_the_url_is_masked_in_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="facegate.camera.grabber"):
        with LatestFrameGrabber(Script(LeakySource()), backoff=FAST_BACKOFF) as grabber:
            assert len(_collect(grabber, 1)) == 1
    assert "RuntimeError: driver failed on rtsp://admin:***@cam/live?token=***" in caplog.text
    assert "s3cret" not in caplog.text
