"""Seeded sequences of attack species and bona fide visitors, rendered from one photo.

Species (what the attacker holds in front of the door camera):

1. `print`: the photo printed on paper, held by hand: approach from ~1.5 m to ~0.4 m,
   3-D pose up to 25 degrees, hand tremor; paper tone, halftone, print blur, glare.
2. `curved_print`: the same, the paper bent on a cylinder of radius 8-30 cm (axis mostly
   vertical, around the attacker's hand or head), flexing slightly while held.
3. `screen_still`: a phone or tablet showing the photo, held by hand: display gamma and
   brightness, pixel-grid moire, black bezel, reflections of the room and of a lamp.
4. `screen_video`: a tablet or monitor replaying a video of the person moving their head.
5. `eyehole_print`: a print with the eyes cut out, worn in front of a live face whose eyes
   (blinking) show through the holes.

Bona fide: `live_moving` (a head rendered from the photo's FaceMesh mesh, walking up to the
door while looking around, blinking) and `live_still` (standing at the door, micro-motion
and breathing only).

Every number is drawn from a `numpy.random.Generator` seeded per sequence: the same seed,
photo and species give the same frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from facegate.pad.render import Raster, composite, lambert, rasterize, sample, specular
from facegate.pad.scene import (
    F32,
    F64,
    FPS,
    U8,
    Camera,
    Pose,
    Wobble,
    expose,
    hallway,
    smoothstep,
)
from facegate.pad.surfaces import BentSheet, HeightField, Sheet, Surface, head_depth

if TYPE_CHECKING:
    from facegate.vision.engine import FaceEngine

ATTACKS: Final = ("print", "curved_print", "screen_still", "screen_video", "eyehole_print")
BONA_FIDE: Final = ("live_moving", "live_still", "live_answering")
#: `live_answering`: the visitor is prompted at PROMPT_AT_S and turns their head to the
#: side `answer_for(seed)` names from ANSWER_AT_S (0.8 s to read and react).
PROMPT_AT_S: Final = 1.0
ANSWER_AT_S: Final = 1.8
KINDS: Final = (*ATTACKS, *BONA_FIDE)

#: The door camera of every sequence: 640x480, 60 degrees.
DOOR_CAMERA: Final = Camera()
#: The source photo is resampled so that its eyes are this many texels apart.
TEXTURE_IOD: Final = 110.0
#: An adult's inter-pupillary distance, metres (mean ~63 mm, sd ~3.5 mm).
IOD_M: Final = 0.063
#: Photos accepted as enrollment quality: one face, nearly frontal, eyes this far apart.
MAX_SOURCE_YAW_DEG: Final = 20.0
MIN_SOURCE_IOD_PX: Final = 18.0

RIGHT_EYE_RING: Final = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160,
                         161, 246)  # fmt: skip
LEFT_EYE_RING: Final = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387,
                        388, 466)  # fmt: skip


@dataclass(frozen=True)
class FaceSource:
    """An enrollment-quality photo ready to render: RGB 0..1 with its FaceMesh points."""

    person: str
    path: Path
    image: F32
    mesh: F32
    closed_eyes: F32  # the same photo with the eyes shut (for blinks)
    eye_holes: F32  # 1 inside the eyes (a little larger than the lids), else 0
    depth: F32  # the head's relief (texels, + away from the camera, 0 at the eyes)
    head_mask: F32  # 1 on the head (face, hair, neck), 0 on the photo's background

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.mesh[263, :2] - self.mesh[33, :2]))

    @property
    def eyes_mid(self) -> F64:
        return np.asarray((self.mesh[263, :2] + self.mesh[33, :2]) / 2, dtype=np.float64)


def load_source(engine: FaceEngine, path: Path, person: str) -> FaceSource | None:
    """The photo as a renderable source, or None when it is not enrollment quality."""
    from facegate.imageio import load_image

    rgb = load_image(path)
    detections = engine.detect(rgb)
    if len(detections) != 1:
        return None
    landmarks = engine.landmarker.locate(rgb, detections[0])
    mesh = np.array(landmarks.mesh, dtype=np.float32)
    iod = float(np.linalg.norm(mesh[263, :2] - mesh[33, :2]))
    if landmarks.face_score < 0.5 or landmarks.yaw_deg > MAX_SOURCE_YAW_DEG:
        return None
    if iod < MIN_SOURCE_IOD_PX:
        return None
    scale = TEXTURE_IOD / iod
    image = np.asarray(
        cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC), dtype=np.uint8
    )
    mesh *= scale
    closed, holes = _eyes(image, mesh)
    eye_z = float((mesh[33, 2] + mesh[263, 2]) / 2)
    depth, mask = head_depth(mesh, image.shape[:2], eye_z)
    texture = np.asarray(image, dtype=np.float32) / np.float32(255)
    return FaceSource(person, path, texture, mesh, closed, holes, depth, mask)


def _eyes(image: U8, mesh: F32) -> tuple[F32, F32]:
    """The photo with its eyes closed and the eye holes of an eye-hole print.

    Closing slides the upper lid (with the skin above it, down to the brow) over the eye to
    the lower lid, as a real lid moves: a smooth downward displacement that is the eye's
    opening at the lid line, fades to nothing at the brow and is zero below the eye."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    shift = np.zeros((h, w), dtype=np.float32)
    holes = np.zeros((h, w), dtype=np.uint8)
    for ring, (upper, lower) in ((RIGHT_EYE_RING, (159, 145)), (LEFT_EYE_RING, (386, 374))):
        points = mesh[list(ring), :2]
        centre = points.mean(axis=0)
        cv2.fillPoly(holes, [np.round(centre + (points - centre) * 1.35).astype(np.int32)], 255)
        opening = float(mesh[lower, 1] - mesh[upper, 1])
        if opening <= 0.5:
            continue
        x0, x1 = float(points[:, 0].min()), float(points[:, 0].max())
        half = (x1 - x0) / 2 + 1e-6
        across = np.clip(1 - ((xs - (x0 + x1) / 2) / (half * 1.15)) ** 2, 0, 1)
        lid = float(mesh[lower, 1])
        reach = 2.5 * opening  # up to about the brow
        above = np.clip((ys - (lid - reach)) / reach, 0, 1)  # 0 at the brow, 1 at the lid
        shift = np.maximum(shift, np.where(ys <= lid, opening * across * above**0.7, 0))
    closed = cv2.remap(image, xs, ys - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    soft = cv2.GaussianBlur(holes.astype(np.float32) / 255, (0, 0), 1.5)
    return (
        np.asarray(closed, dtype=np.float32) / np.float32(255),
        np.asarray(soft, dtype=np.float32),
    )


@dataclass(frozen=True)
class Presentation:
    """One rendered sequence."""

    kind: str
    person: str
    source: str
    seed: int
    frames: list[U8]

    @property
    def bona_fide(self) -> bool:
        return self.kind in BONA_FIDE


# --- motion ------------------------------------------------------------------------------


PoseAt = Callable[[float], Pose]


def _pivoted(pose: Pose, pivot: F64) -> Pose:
    """The pose of an object turning about `pivot` (object frame) instead of its origin."""
    shift = pivot - pose.rotation @ pivot
    return Pose(
        pose.yaw_deg, pose.pitch_deg, pose.roll_deg,
        pose.x_m + shift[0], pose.y_m + shift[1], pose.z_m + shift[2],
    )  # fmt: skip


def walking_head(rng: np.random.Generator, seconds: float, walk_s: float | None = None) -> PoseAt:
    """A visitor walking up to the door and stopping, looking around as people do: they
    arrive after 0.6-0.85 of `walk_s` (default: of the sequence) and stay."""
    z0, z1 = rng.uniform(1.1, 1.5), rng.uniform(0.45, 0.75)
    x0, x1 = rng.uniform(-0.12, 0.12), rng.uniform(-0.05, 0.05)
    y0 = rng.uniform(-0.06, 0.04)
    arrive = rng.uniform(0.6, 0.85) * (seconds if walk_s is None else walk_s)
    bob_phase = rng.uniform(0, 2 * math.pi)
    yaw0, pitch0, roll0 = rng.uniform(-8, 8), rng.uniform(-6, 4), rng.uniform(-4, 4)
    yaw = Wobble(rng, rng.uniform(8, 20), 0.15, 0.6)
    pitch = Wobble(rng, rng.uniform(3, 8), 0.15, 0.6)
    roll = Wobble(rng, rng.uniform(2, 5), 0.1, 0.5)
    sway = Wobble(rng, 0.01, 0.3, 0.8)
    neck = np.array([0.0, 0.03, 0.09])  # heads turn about the neck, behind the eyes

    def at(t: float) -> Pose:
        s = smoothstep(t, 0.0, arrive)
        walking = 1.0 - s
        bob = 0.012 * walking * math.sin(2 * math.pi * 1.8 * t + bob_phase)
        pose = Pose(
            yaw0 + yaw(t), pitch0 + pitch(t), roll0 + roll(t),
            x0 + (x1 - x0) * s + sway(t), y0 + bob, z0 + (z1 - z0) * s,
        )  # fmt: skip
        return _pivoted(pose, neck)

    return at


def standing_head(rng: np.random.Generator, seconds: float) -> PoseAt:
    """A visitor standing still at the door: sway, breathing, no deliberate motion."""
    z, x, y = rng.uniform(0.5, 0.9), rng.uniform(-0.08, 0.08), rng.uniform(-0.06, 0.04)
    yaw0, pitch0, roll0 = rng.uniform(-5, 5), rng.uniform(-5, 3), rng.uniform(-3, 3)
    yaw, pitch, roll = (Wobble(rng, rng.uniform(0.3, 1.0), 0.1, 0.5) for _ in range(3))
    sway_x, sway_y = (Wobble(rng, rng.uniform(0.002, 0.005), 0.1, 0.4) for _ in range(2))
    breath = Wobble(rng, 0.003, 0.2, 0.35)
    neck = np.array([0.0, 0.03, 0.09])

    def at(t: float) -> Pose:
        pose = Pose(
            yaw0 + yaw(t), pitch0 + pitch(t), roll0 + roll(t),
            x + sway_x(t), y + sway_y(t), z + breath(t),
        )  # fmt: skip
        return _pivoted(pose, neck)

    return at


def hand_held(
    rng: np.random.Generator,
    seconds: float,
    *,
    near: tuple[float, float],
    far: tuple[float, float],
    max_angle: float = 25.0,
) -> PoseAt:
    """Something held in one hand and brought towards the camera: slow drift of up to
    `max_angle` degrees, physiological tremor (4-12 Hz), pivoting about the hand below."""
    z0, z1 = rng.uniform(*far), rng.uniform(*near)
    x0, x1 = rng.uniform(-0.15, 0.15), rng.uniform(-0.06, 0.06)
    y0, y1 = rng.uniform(-0.08, 0.06), rng.uniform(-0.05, 0.04)
    start, arrive = rng.uniform(0, 0.15) * seconds, rng.uniform(0.55, 0.85) * seconds
    careful = rng.random() < 0.25  # some attackers keep the sheet square to the camera
    bias = 0.0 if careful else 0.6 * max_angle
    drift = 5.0 if careful else 0.6 * max_angle
    yaw0, pitch0 = rng.uniform(-bias, bias), rng.uniform(-bias, bias)
    roll0 = rng.uniform(-10, 10)
    yaw = Wobble(rng, rng.uniform(0.3 * drift, drift), 0.1, 0.6)
    pitch = Wobble(rng, rng.uniform(0.3 * drift, drift), 0.1, 0.6)
    roll = Wobble(rng, rng.uniform(1, 5), 0.1, 0.6)
    tremor_deg = rng.uniform(0.2, 1.0)
    tremor_m = rng.uniform(0.0005, 0.002)
    shake = [Wobble(rng, tremor_deg, 4, 12) for _ in range(3)]
    jitter = [Wobble(rng, tremor_m, 4, 12) for _ in range(3)]
    hand = np.array([0.0, 0.12, 0.0])

    def clip(angle: float) -> float:
        return max(-max_angle, min(max_angle, angle))

    def at(t: float) -> Pose:
        s = smoothstep(t, start, arrive)
        pose = Pose(
            clip(yaw0 + yaw(t) + shake[0](t)), clip(pitch0 + pitch(t) + shake[1](t)),
            roll0 + roll(t) + shake[2](t),
            x0 + (x1 - x0) * s + jitter[0](t), y0 + (y1 - y0) * s + jitter[1](t),
            z0 + (z1 - z0) * s + jitter[2](t),
        )  # fmt: skip
        return _pivoted(pose, hand)

    return at


# --- appearance --------------------------------------------------------------------------


def _paper(texture: F32, rng: np.random.Generator) -> tuple[F32, F64]:
    """A photo as a print shows it: halftone screens, print blur, paper white and ink black,
    a smaller gamut."""
    screened = _halftone(texture, rng.uniform(1.2, 2.2))
    mix = rng.uniform(0.3, 0.8)
    printed = mix * screened + (1 - mix) * texture
    printed = cv2.GaussianBlur(printed, (0, 0), rng.uniform(0.4, 1.2))
    grey = printed.mean(axis=2, keepdims=True)
    printed = grey + rng.uniform(0.7, 0.95) * (printed - grey)
    white = rng.uniform(0.82, 0.95) * np.array(
        [1.0, rng.uniform(0.96, 1.0), rng.uniform(0.88, 0.97)]
    )
    black = rng.uniform(0.04, 0.12)
    out = black + (white[None, None, :] - black) * np.power(
        np.clip(printed, 0, 1), rng.uniform(0.9, 1.2)
    )
    return out.astype(np.float32), white


def _halftone(texture: F32, period: float) -> F32:
    """Amplitude-modulated halftone, one rotated dot screen per ink (C, M, Y as 1 - R, G, B)."""
    h, w = texture.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty_like(texture)
    for channel, angle in enumerate((15.0, 75.0, 0.0)):
        a = math.radians(angle)
        xr, yr = xx * math.cos(a) + yy * math.sin(a), -xx * math.sin(a) + yy * math.cos(a)
        screen = (
            0.25 * (np.cos(2 * math.pi * xr / period) + np.cos(2 * math.pi * yr / period)) + 0.5
        )
        ink = 1 - texture[:, :, channel]
        out[:, :, channel] = 1 - np.clip((ink - screen) * 4 + 0.5, 0, 1)
    return out


def _on_sheet(image: F32, margin: float, fill: F64) -> tuple[F32, F32, F64]:
    """The image with a margin of `fill` around it (a print's white border); alpha; offset."""
    h, w = image.shape[:2]
    pad = int(margin * max(h, w))
    sheet = np.empty((h + 2 * pad, w + 2 * pad, 3), dtype=np.float32)
    sheet[...] = fill
    sheet[pad : pad + h, pad : pad + w] = image
    alpha = np.ones(sheet.shape[:2], dtype=np.float32)
    return sheet, alpha, np.array([pad, pad], dtype=np.float64)


@dataclass
class _Light:
    direction: F64
    ambient: float
    lamp: F64
    glare: float
    shininess: float


def _light(rng: np.random.Generator) -> _Light:
    direction = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.8, -0.2), -1.0])
    lamp = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-1.2, -0.5), rng.uniform(0.0, 0.6)])
    return _Light(
        direction / np.linalg.norm(direction), rng.uniform(0.55, 0.75), lamp,
        rng.uniform(0.0, 0.5), rng.uniform(15, 80),
    )  # fmt: skip


def _draw(
    canvas: F32,
    surface: Surface,
    pose: Pose,
    camera: Camera,
    light: _Light,
    texture: F32 | None = None,
    *,
    gloss: float = 0.0,
    emissive: float = 0.0,
) -> None:
    """Render one surface: diffuse shading (none for an emissive screen), glare."""
    raster = rasterize(surface, pose, camera)
    if raster is None:
        return
    colour = sample(surface.texture if texture is None else texture, raster).astype(np.float64)
    if emissive > 0:
        colour *= emissive
    else:
        colour *= lambert(raster, light.direction, light.ambient)[..., None]
    if gloss > 0:
        colour += gloss * specular(raster, light.lamp, light.shininess)[..., None]
    composite(canvas, raster, colour.astype(np.float32))


# --- the sequences -----------------------------------------------------------------------


def _head(source: FaceSource, scale: float) -> HeightField:
    m = IOD_M * scale / source.iod
    return HeightField(source.image, source.head_mask, m, source.eyes_mid, source.depth)


def _blinks(rng: np.random.Generator, seconds: float) -> Callable[[float], float]:
    """How closed the eyes are at time t (0 open, 1 shut): a blink every 2-6 s of
    100-300 ms."""
    times: list[float] = []
    t = rng.uniform(0.2, 2.5)
    while t < seconds:
        times.append(t)
        t += rng.uniform(2.0, 6.0)
    lengths = rng.uniform(0.1, 0.3, len(times))

    def closed(now: float) -> float:
        for start, length in zip(times, lengths, strict=True):
            if start <= now <= start + length:
                return math.sin(math.pi * (now - start) / length)
        return 0.0

    return closed


def _head_texture(source: FaceSource, shut: float) -> F32:
    if shut <= 0.05:
        return source.image
    return ((1 - shut) * source.image + shut * source.closed_eyes).astype(np.float32)


def render(
    kind: str,
    source: FaceSource,
    seed: int,
    *,
    camera: Camera = DOOR_CAMERA,
    seconds: float = 3.0,
    video_source: FaceSource | None = None,
    walk_s: float | None = None,
) -> Presentation:
    """Render `kind` (one of KINDS) from `source` with everything drawn from `seed`.
    `walk_s`: a `live_moving` visitor walks up as in a sequence this long, then stays at
    the door looking around until `seconds` (default: the walk spans the sequence)."""
    rng = np.random.default_rng(seed)
    if kind == "live_answering":
        frames = _live(source, rng, camera, seconds, still=False, answer=answer_for(seed))
        return Presentation(kind, source.person, source.path.name, seed, frames)
    if kind == "live_moving" and walk_s is not None:
        frames = _live(source, rng, camera, seconds, still=False, walk_s=walk_s)
        return Presentation(kind, source.person, source.path.name, seed, frames)
    frames = _RENDERERS[kind](source, rng, camera, seconds, video_source or source)
    return Presentation(kind, source.person, source.path.name, seed, frames)


_Renderer = Callable[[FaceSource, np.random.Generator, Camera, float, FaceSource], list[U8]]


def _times(seconds: float) -> list[float]:
    return [k / FPS for k in range(int(round(seconds * FPS)))]


def _sensor(rng: np.random.Generator) -> Callable[[F32], U8]:
    noise, blur = rng.uniform(0.006, 0.012), rng.uniform(0.5, 0.9)
    return lambda scene: expose(scene, rng, noise=noise, blur_px=blur)


def answer_for(seed: int) -> str:
    """The side a `live_answering` visitor turns to (the prompt they were shown)."""
    return "turn_left" if seed % 2 == 0 else "turn_right"


def answering_head(
    rng: np.random.Generator, seconds: float, action: str, frontal_deg: float = 0.0
) -> PoseAt:
    """A visitor walking up who, prompted, stops looking around and faces the door's
    display (their head's wandering falls to a fifth around facing the camera:
    `frontal_deg`, the render yaw that undoes the photo's own head turn), then turns
    their head 25-35 degrees to their own left or right (0.5 s to turn, 0.4 s held,
    0.5 s back)."""
    walk = walking_head(rng, seconds)
    amplitude = rng.uniform(25, 35) * (1 if action == "turn_left" else -1)
    prompted = frontal_deg
    # The prompt comes once the face is recognised: the visitor is near by then (the last
    # steps from ~0.85 m), not still walking up the hallway.
    z0, z1 = rng.uniform(0.75, 0.95), rng.uniform(0.5, 0.65)

    def at(t: float) -> Pose:
        pose = walk(t)
        z = z0 + (z1 - z0) * smoothstep(t, 0.0, PROMPT_AT_S)
        pose = Pose(pose.yaw_deg, pose.pitch_deg, pose.roll_deg, pose.x_m, pose.y_m, z)
        attention = smoothstep(t, PROMPT_AT_S, PROMPT_AT_S + 0.4)
        yaw = pose.yaw_deg + attention * 0.8 * (prompted - pose.yaw_deg)
        turn = smoothstep(t, ANSWER_AT_S, ANSWER_AT_S + 0.5) - smoothstep(
            t, ANSWER_AT_S + 0.9, ANSWER_AT_S + 1.4
        )
        return Pose(yaw + amplitude * turn, pose.pitch_deg, pose.roll_deg,
                    pose.x_m, pose.y_m, pose.z_m)  # fmt: skip

    return at


def _live(
    source: FaceSource,
    rng: np.random.Generator,
    camera: Camera,
    seconds: float,
    still: bool,
    answer: str | None = None,
    walk_s: float | None = None,
) -> list[U8]:
    background = hallway(rng, camera)
    head = _head(source, rng.uniform(0.94, 1.06))
    if answer is not None:
        from facegate.vision.liveness.actions import signed_yaw

        motion = answering_head(rng, seconds, answer, -signed_yaw(source.mesh))
    else:
        motion = standing_head(rng, seconds) if still else walking_head(rng, seconds, walk_s)
    blink = _blinks(rng, seconds)
    light, sensor = _light(rng), _sensor(rng)
    light.glare = 0.0
    frames = []
    for t in _times(seconds):
        canvas = background.copy()
        _draw(canvas, head, motion(t), camera, light, _head_texture(source, blink(t)))
        frames.append(sensor(canvas))
    return frames


def _live_moving(
    source: FaceSource, rng: np.random.Generator, camera: Camera, seconds: float, _: FaceSource
) -> list[U8]:
    return _live(source, rng, camera, seconds, still=False)


def _live_still(
    source: FaceSource, rng: np.random.Generator, camera: Camera, seconds: float, _: FaceSource
) -> list[U8]:
    return _live(source, rng, camera, seconds, still=True)


def _print_sheet(source: FaceSource, rng: np.random.Generator) -> tuple[F32, F32, float, F64]:
    """The printed photo on paper: texture, alpha, metres per texel, centre (eyes)."""
    paper, white = _paper(source.image, rng)
    sheet, alpha, offset = _on_sheet(paper, rng.uniform(0.03, 0.12), white)
    m = IOD_M * rng.uniform(0.8, 1.3) / source.iod  # printed about life size
    return sheet, alpha, m, source.eyes_mid + offset


def _print(
    source: FaceSource, rng: np.random.Generator, camera: Camera, seconds: float, _: FaceSource
) -> list[U8]:
    background = hallway(rng, camera)
    sheet, alpha, m, centre = _print_sheet(source, rng)
    surface = Sheet(sheet, alpha, m, centre)
    motion = hand_held(rng, seconds, near=(0.35, 0.6), far=(1.2, 1.6))
    light, sensor = _light(rng), _sensor(rng)
    frames = []
    for t in _times(seconds):
        canvas = background.copy()
        _draw(canvas, surface, motion(t), camera, light, gloss=light.glare)
        frames.append(sensor(canvas))
    return frames


def _curved_print(
    source: FaceSource, rng: np.random.Generator, camera: Camera, seconds: float, _: FaceSource
) -> list[U8]:
    background = hallway(rng, camera)
    sheet, alpha, m, centre = _print_sheet(source, rng)
    radius = rng.uniform(0.08, 0.30)
    axis = rng.uniform(-15, 15) + (90.0 if rng.random() < 0.3 else 0.0)
    convex = bool(rng.random() < 0.85)
    flex = Wobble(rng, rng.uniform(0.0, 0.12), 0.2, 1.0)  # the hand squeezes and lets go
    motion = hand_held(rng, seconds, near=(0.35, 0.6), far=(1.2, 1.6))
    light, sensor = _light(rng), _sensor(rng)
    frames = []
    for t in _times(seconds):
        canvas = background.copy()
        bent = BentSheet(
            sheet, alpha, m, centre, radius_m=radius * (1 + flex(t)), axis_deg=axis,
            convex=convex,
        )  # fmt: skip
        _draw(canvas, bent, motion(t), camera, light, gloss=light.glare)
        frames.append(sensor(canvas))
    return frames


@dataclass
class _Device:
    """A phone or tablet: display size (metres), bezel, face size on it, distances."""

    display: tuple[float, float]
    bezel: float
    face_iod: tuple[float, float]
    near: tuple[float, float]
    far: tuple[float, float]


PHONE: Final = _Device((0.065, 0.14), 0.004, (0.022, 0.04), (0.2, 0.35), (0.6, 0.9))
TABLET: Final = _Device((0.15, 0.2), 0.01, (0.04, 0.07), (0.35, 0.55), (0.9, 1.3))
_SCREEN_TEXEL_M: Final = 0.00025


def _device(rng: np.random.Generator) -> _Device:
    return PHONE if rng.random() < 0.5 else TABLET


class _Screen:
    """A display showing an image: emitted light (display gamma and brightness), pixel-grid
    moire, a black glossy bezel, the room and a lamp reflected in the glass."""

    def __init__(self, device: _Device, rng: np.random.Generator) -> None:
        self.device = device
        self.texel_m = _SCREEN_TEXEL_M
        width, height = device.display
        self.size = (int(width / self.texel_m), int(height / self.texel_m))
        self.pad = int(device.bezel / self.texel_m)
        self.gamma = rng.uniform(0.8, 1.25)
        self.brightness = rng.uniform(0.9, 1.4)
        self.pitch_m = rng.uniform(0.00005, 0.0001)
        self.moire = rng.uniform(0.1, 0.3)
        self.reflect = rng.uniform(0.03, 0.12)
        self.room = cv2.GaussianBlur(rng.uniform(0, 1, (48, 48, 3)).astype(np.float32), (0, 0), 3)
        self.face_iod_m = rng.uniform(*device.face_iod)

    def show(self, image: F32, eyes: F64, iod: float) -> tuple[F32, F32, F64]:
        """The screen's texture (bezel included), its alpha and the eyes' texel position:
        `image` scaled so its IOD is `face_iod_m`, centred on the eyes, cropped."""
        w, h = self.size
        scale = self.face_iod_m / self.texel_m / iod
        shift = np.array([w / 2, h * 0.42]) - eyes * scale
        warp = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]], dtype=np.float32)
        display = cv2.warpAffine(image, warp, (w, h), flags=cv2.INTER_LINEAR)
        lit = self.brightness * np.power(np.clip(display, 0, 1), self.gamma)
        p = self.pad
        texture = np.zeros((h + 2 * p, w + 2 * p, 3), dtype=np.float32)
        texture[...] = 0.03
        texture[p : p + h, p : p + w] = lit
        alpha = np.ones(texture.shape[:2], dtype=np.float32)
        return texture, alpha, np.array([w / 2 + p, h * 0.42 + p])

    def draw(self, canvas: F32, surface: Sheet, pose: Pose, camera: Camera, light: _Light) -> None:
        raster = rasterize(surface, pose, camera)
        if raster is None:
            return
        colour = sample(surface.texture, raster)
        x_m = (raster.u - surface.centre[0]) * surface.metres_per_texel
        y_m = (raster.v - surface.centre[1]) * surface.metres_per_texel
        k = 2 * math.pi / self.pitch_m
        grid = 0.25 * (1 + np.cos(k * x_m)) * (1 + np.cos(k * y_m))
        colour = colour * (1 - self.moire + self.moire * grid[..., None] * 2)
        colour = colour + self.reflect * self._reflection(raster)
        colour = colour + light.glare * specular(raster, light.lamp, 300.0)[..., None]
        composite(canvas, raster, colour.astype(np.float32))

    def _reflection(self, raster: Raster) -> F32:
        """The room mirrored in the glass: looked up by the reflected viewing direction."""
        px, py, pz = raster.points
        norm = np.sqrt(px**2 + py**2 + pz**2)
        d = np.stack([px, py, pz]) / norm
        n = np.stack(raster.normals)
        r = d - 2 * (d * n).sum(axis=0) * n
        u = ((r[0] * 0.5 + 0.5) * 47).astype(np.float32)
        v = ((r[1] * 0.5 + 0.5) * 47).astype(np.float32)
        out = cv2.remap(self.room, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return np.asarray(out, dtype=np.float32)


def _screen_still(
    source: FaceSource, rng: np.random.Generator, camera: Camera, seconds: float, _: FaceSource
) -> list[U8]:
    background = hallway(rng, camera)
    device = _device(rng)
    screen = _Screen(device, rng)
    texture, alpha, centre = screen.show(source.image, source.eyes_mid, source.iod)
    surface = Sheet(texture, alpha, screen.texel_m, centre)
    motion = hand_held(rng, seconds, near=device.near, far=device.far, max_angle=20.0)
    light, sensor = _light(rng), _sensor(rng)
    frames = []
    for t in _times(seconds):
        canvas = background.copy()
        screen.draw(canvas, surface, motion(t), camera, light)
        frames.append(sensor(canvas))
    return frames


def _screen_video(
    source: FaceSource,
    rng: np.random.Generator,
    camera: Camera,
    seconds: float,
    video_source: FaceSource,
) -> list[U8]:
    """A recorded video of the person turning their head, replayed on a tablet or monitor
    that is mounted (barely moving) or hand-held."""
    recording = _recording(video_source, rng, camera, seconds)
    background = hallway(rng, camera)
    device = TABLET
    screen = _Screen(device, rng)
    mounted = rng.random() < 0.5
    motion = (
        hand_held(rng, seconds, near=(0.4, 0.6), far=(0.45, 0.7), max_angle=3.0)
        if mounted
        else hand_held(rng, seconds, near=device.near, far=device.far, max_angle=20.0)
    )
    light, sensor = _light(rng), _sensor(rng)
    frames = []
    for t, (shown, eyes, iod) in zip(_times(seconds), recording, strict=True):
        canvas = background.copy()
        texture, alpha, centre = screen.show(shown, eyes, iod)
        screen.draw(canvas, Sheet(texture, alpha, screen.texel_m, centre), motion(t), camera, light)
        frames.append(sensor(canvas))
    return frames


def _recording(
    source: FaceSource, rng: np.random.Generator, camera: Camera, seconds: float
) -> list[tuple[F32, F64, float]]:
    """What the attacker recorded: the person at ~0.6 m turning their head, as frames with
    the eyes' position and distance (so the replay keeps the face centred and sized)."""
    head = _head(source, 1.0)
    motion = walking_head(rng, seconds)
    blink = _blinks(rng, seconds)
    light = _light(rng)
    z = rng.uniform(0.5, 0.7)
    backdrop = hallway(rng, camera)
    out = []
    for t in _times(seconds):
        pose = motion(t)
        pose = Pose(pose.yaw_deg, pose.pitch_deg, pose.roll_deg, 0.0, 0.0, z)
        canvas = backdrop.copy()
        _draw(canvas, head, pose, camera, light, _head_texture(source, blink(t)))
        f = camera.focal_px
        eyes = np.array([camera.width / 2, camera.height / 2])
        out.append((canvas, eyes, f * IOD_M / z))
    return out


def _eyehole_print(
    source: FaceSource, rng: np.random.Generator, camera: Camera, seconds: float, _: FaceSource
) -> list[U8]:
    """A print with the eyes cut out, worn ~2.5 cm in front of a live face: the attacker's
    own eyes (blinking) behind the holes, the print moving with the head."""
    background = hallway(rng, camera)
    head = _head(source, 1.0)
    paper, _white = _paper(source.image, rng)
    alpha = np.clip(1 - source.eye_holes, 0, 1).astype(np.float32)
    sheet = Sheet(paper, alpha, head.metres_per_texel, source.eyes_mid)
    motion = walking_head(rng, seconds)
    blink = _blinks(rng, seconds)
    gap = rng.uniform(0.015, 0.035)
    light, sensor = _light(rng), _sensor(rng)
    frames = []
    for t in _times(seconds):
        canvas = background.copy()
        pose = motion(t)
        _draw(canvas, head, pose, camera, light, _head_texture(source, blink(t)))
        front = pose.rotation @ np.array([0.0, 0.0, -gap]) + pose.translation
        held = Pose(pose.yaw_deg, pose.pitch_deg, pose.roll_deg, *front)
        _draw(canvas, sheet, held, camera, light, gloss=light.glare)
        frames.append(sensor(canvas))
    return frames


_RENDERERS: Final[dict[str, _Renderer]] = {
    "print": _print,
    "curved_print": _curved_print,
    "screen_still": _screen_still,
    "screen_video": _screen_video,
    "eyehole_print": _eyehole_print,
    "live_moving": _live_moving,
    "live_still": _live_still,
}
