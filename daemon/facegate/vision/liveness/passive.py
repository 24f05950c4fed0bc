"""Liveness `type: passive`: 3-D structure from the face's own motion, per track.

Every observation of a track adds one pair of frames LAG apart to the evidence
(vision/liveness/structure.py): how strongly the texture's motion shows a relief curved
in two directions (a face) rather than a sheet, flat or bent (a print, a screen).

- **Live** evidence accumulates as a CUSUM of per-pair log-likelihood ratios (live versus
  attack, from the pair's `curved_f`, capped per pair): a person standing still adds
  nothing and loses nothing, a moving face adds up quickly, a print's rare noisy pair
  cannot carry it alone. A sheet-like pair (below) counts strongly against. A track is
  live when the sum reaches LIVE_EVIDENCE.
- **Attack** evidence: pairs where the surface moved, a face moving as it did would have
  shown strong relief (`expected_relief_f`) and the surface showed none: a flat sheet.
  ATTACK_PAIRS of them make the track an attack. A bent sheet is never judged live (its
  relief is developable) but is not called an attack either: it stays undecided.
- Otherwise the track is **undecided**: no unlock in `passive` mode; a challenge in
  `challenge` mode. A still person gives no geometric evidence at all.

Blinks and head turns are recorded as actions (for the challenge), not as live evidence:
an eye-hole print with real eyes behind it, or a replayed video, blinks too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from facegate.vision.liveness.actions import ActionDetector
from facegate.vision.liveness.structure import PairEvidence, analyse
from facegate.vision.liveness.texture import TextureTracks
from facegate.vision.stages import LivenessStage
from facegate.vision.types import FaceEncoding, ImageArray, LivenessEvidence, RefusalReason

logger = logging.getLogger(__name__)

#: Frames between the two frames of a pair: 0.3 s at 10 fps. Longer pairs see more
#: rotation but track worse (measured on training renders: 2, 3 and 5 separated alike).
LAG: Final = 3
#: Faces with eyes closer than this (pixels) give no evidence either way: the LK window
#: (11 px) then covers half the face and smooths its parallax away. On rendered live heads
#: at 1.2-1.5 m (IOD about 20 px) a face's relief fell to what a sheet shows, while a
#: face moving as they did should have shown 50 times more. The door's default quality
#: gate (faces 80 px wide) embeds nothing this small anyway.
MIN_IOD_PX: Final = 30.0
#: Frames between analysed pairs (texture is measured on every frame).
ANALYSE_EVERY: Final = 1
#: Pairs with fewer tracked points say nothing (the F statistics need the degrees).
MIN_PAIR_POINTS: Final = 20
#: Per-pair log-likelihood ratio live/attack = (curved_f - PIVOT) / SCALE, capped at +-CAP.
#: Measured on training renders (5-celebrity train photos only; 860 attack pairs of four
#: species, 192 moving-live pairs), per bin of curved_f the empirical ratio was about -2
#: below 0, -1.4 for 1-2, near 0 for 2-5, +2.5 for 6-10 and beyond +4.5 above 10 (where no
#: attack pair fell: the attacks' largest was 8.5, their 99th percentile 4-8 by species).
#: The line crosses 0 at 4 and reaches the cap at 8; the cap keeps the attacks' unknown
#: tail from counting for more than that.
LLR_PIVOT_F: Final = 4.0
LLR_SCALE_F: Final = 2.0
LLR_CAP: Final = 2.0
#: Live when the CUSUM reaches this (odds of about 400 to 1): at least three strong pairs.
LIVE_EVIDENCE: Final = 6.0
#: Pairs noisier than this (residual per coordinate, IOD) say nothing: the points were not
#: measured well enough (a 256-colour GIF of a live person gave 0.026-0.056; rendered
#: sequences 0.001-0.02).
MAX_PAIR_NOISE_IOD: Final = 0.02
#: A sheet-like pair: a face moving as the surface did would have shown relief this
#: strong (F): ten times what the surface may show ...
FLAT_EXPECTED_F: Final = 40.0
#: ... and the surface showed no more relief than this (a flat sheet: a print, a screen).
#: A sheet bent in one direction is not called an attack from its shape (on the training
#: renders no rule on the bent sheet's own relief flagged more curved prints than it
#: flagged live faces); it is never judged live either, so it stays undecided.
FLAT_RELIEF_F: Final = 4.0
#: ... and only when the surface moved this much (median point, IOD): the issue's own
#: measurements saw live heads leave a homography only past about 5 % IOD of motion,
#: and a still face's homography decomposes into noise.
SHEET_MIN_MOTION_IOD: Final = 0.06
#: A sheet-like pair counts against live as much as two strong live pairs count for it (it
#: is a measurement of no relief where a face would have shown plenty); one such pair on
#: a live face (a glitch) is outweighed by the face's next pairs.
SHEET_PENALTY: Final = 2 * LLR_CAP
#: Sheet-like pairs that make a track an attack: independent ones (their frames do not
#: overlap: pairs LAG frames apart), and ...
ATTACK_PAIRS: Final = 2
#: ... only while the track never showed a face's two-way curvature unmistakably (a pair
#: at the cap of the live ratio; 1 in 1000 attack pairs on the training renders), unless
#: the sheet pairs go on to this many: a live head walking up gave two sheet-like pairs
#: now and then (its homography decomposes into a motion a face did not make).
FACE_SEEN_F: Final = LLR_PIVOT_F + LLR_CAP * LLR_SCALE_F
ATTACK_PAIRS_AFTER_FACE: Final = 4
#: `spectrum: nir` cameras: every this many observations of a track, check that the face
#: is grey (|R-G| + |G-B| below this, in grey levels: a NoIR sensor behind an 850 nm pass
#: filter gives the same response in all three channels, give or take its colour matrix).
NIR_CHECK_EVERY: Final = 30
NIR_MAX_CHROMA: Final = 12
#: A Raspberry Pi camera module's horizontal field of view when a camera does not say.
DEFAULT_HFOV_DEG: Final = 60.0


@dataclass
class _Track:
    texture: TextureTracks = field(default_factory=TextureTracks)
    actions: ActionDetector = field(default_factory=ActionDetector)
    frames: int = 0
    evidence: float = 0.0  # the CUSUM of live evidence
    pairs: int = 0
    sheet_pairs: int = 0
    sheet_pairs_after_live: int = 0
    last_sheet: int = -LAG  # the observation of the last counted sheet-like pair
    best_curved: float = 0.0
    live: bool = False
    attack: bool = False
    yaw: float = math.nan


class PassiveLiveness(LivenessStage):
    """Liveness `type: passive` (and the evidence `challenge` mode builds on)."""

    def __init__(self, *, hfov_deg: float = DEFAULT_HFOV_DEG, nir: bool = False) -> None:
        self._hfov = math.radians(hfov_deg)
        self._nir = nir
        self._warned_colour = False
        self._tracks: dict[int, _Track] = {}
        self._intrinsics: tuple[tuple[int, int], npt.NDArray[np.float64]] | None = None

    @classmethod
    def load(cls, models_dir: Path, threads: int) -> Self:
        return cls()

    def for_camera(self, *, hfov_deg: float, nir: bool = False) -> PassiveLiveness:
        return PassiveLiveness(hfov_deg=hfov_deg, nir=nir)

    def forget(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)

    def observe(self, track_id: int, face: FaceEncoding, image: ImageArray) -> LivenessEvidence:
        track = self._tracks.setdefault(track_id, _Track())
        index = track.frames
        track.frames += 1
        if self._nir and index % NIR_CHECK_EVERY == 0:
            self._check_nir(image, face.detection.box)
        if track.attack:
            # Final: an attack never becomes live again, so the track costs nothing more
            # (its evidence keeps the yaw and actions it had when it was judged).
            return self._evidence(track)
        landmarks = face.landmarks
        if landmarks is None or face.refusal in (RefusalReason.NOT_A_FACE, RefusalReason.NO_EYES):
            track.texture = TextureTracks()  # no mesh to place the points: start again
            return self._evidence(track)
        mesh = landmarks.mesh
        iod = math.dist(landmarks.right_eye, landmarks.left_eye)
        if not iod >= MIN_IOD_PX:
            track.texture = TextureTracks()
            return self._evidence(track)
        track.texture.update(image, face.detection.box, mesh, iod)
        latest = track.texture.latest
        assert latest is not None  # update() just added a frame
        grey, crop = latest
        track.yaw = track.actions.observe(index, mesh, grey, (crop[0], crop[1]))
        # Every other frame: the evidence of pairs one frame apart overlaps anyway, and it
        # halves the cost of the most expensive part.
        pair = track.texture.pair(LAG) if index % ANALYSE_EVERY == 0 else None
        # A pair with too few points would be analysed only to be ignored.
        if pair is not None and len(pair.before) >= MIN_PAIR_POINTS:
            found = analyse(
                pair, iod, self._camera(image),
                expect_relief_below=FLAT_RELIEF_F, expect_motion_above=SHEET_MIN_MOTION_IOD,
            )  # fmt: skip
            if found is not None and found.noise_iod <= MAX_PAIR_NOISE_IOD:
                self._weigh(track, found)
        return self._evidence(track)

    def _check_nir(self, image: ImageArray, box: tuple[float, float, float, float]) -> None:
        """A camera said to see near infrared should give a grey face: a phone or tablet
        screen emits no NIR, so behind a visible-blocking filter it shows no face at all.
        A colourful face means visible light reaches the sensor and that guarantee is
        gone (say so once; the geometry still applies). No NIR footage was available to
        test this: the threshold is the colour of a grey card under a white illuminator."""
        x0, y0, x1, y1 = (int(max(v, 0)) for v in box)
        patch = image[y0:y1, x0:x1].astype(np.int16)
        if patch.size == 0 or self._warned_colour:
            return
        chroma = float(np.abs(patch[..., 0] - patch[..., 1]).mean())
        chroma += float(np.abs(patch[..., 1] - patch[..., 2]).mean())
        if chroma > NIR_MAX_CHROMA:
            self._warned_colour = True
            logger.warning(
                "camera with spectrum nir sees a colourful face (chroma %.0f > %d): visible"
                " light reaches the sensor, so screens are not dark to it; fit a"
                " visible-blocking (850 nm pass) filter",
                chroma, NIR_MAX_CHROMA,
            )  # fmt: skip

    def _camera(self, image: ImageArray) -> npt.NDArray[np.float64]:
        h, w = image.shape[:2]
        if self._intrinsics is None or self._intrinsics[0] != (w, h):
            f = 0.5 * w / math.tan(self._hfov / 2)
            matrix = np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])
            matrix.flags.writeable = False
            self._intrinsics = ((w, h), matrix)
        return self._intrinsics[1]

    @staticmethod
    def _weigh(track: _Track, pair: PairEvidence) -> None:
        track.pairs += 1
        track.best_curved = max(track.best_curved, pair.curved_f)
        ratio = max(-LLR_CAP, min(LLR_CAP, (pair.curved_f - LLR_PIVOT_F) / LLR_SCALE_F))
        if _sheet_like(pair):
            ratio = -SHEET_PENALTY
            now = track.frames - 1
            if now - track.last_sheet >= LAG:  # a pair sharing no frame with the last one
                track.last_sheet = now
                track.sheet_pairs += 1
                if track.live:
                    track.sheet_pairs_after_live += 1
        track.evidence = max(0.0, track.evidence + ratio)
        if track.attack:
            return
        if track.live:
            # A live track showing a sheet again and again (something held up in front
            # of the face on the same track): the sheet decides.
            track.attack = track.sheet_pairs_after_live >= ATTACK_PAIRS_AFTER_FACE
            track.live = not track.attack
        elif track.sheet_pairs >= ATTACK_PAIRS:
            face_seen = track.best_curved >= FACE_SEEN_F
            track.attack = not face_seen or track.sheet_pairs >= ATTACK_PAIRS_AFTER_FACE
        elif track.evidence >= LIVE_EVIDENCE:
            track.live = True

    @staticmethod
    def _evidence(track: _Track) -> LivenessEvidence:
        if track.attack:
            live: bool | None = False
            score = 0.0
            reason = f"a sheet, not a face: {track.sheet_pairs} frame pairs without a face's relief"
        elif track.live:
            live, score = True, min(1.0, max(0.5, track.evidence / (2 * LIVE_EVIDENCE)))
            reason = "3-D face structure in the motion"
        else:
            live, score = None, min(0.499, track.evidence / (2 * LIVE_EVIDENCE))
            reason = (
                "not enough motion to tell a face from a photo yet"
                if track.pairs
                else "no frame pair measured yet"
            )
        return LivenessEvidence(
            live=live,
            score=round(score, 3),
            frames=track.frames,
            reason=reason,
            method="passive",
            yaw_deg=track.yaw,
            actions=tuple(track.actions.actions),
            scores=(
                ("structure", round(track.evidence, 3)),
                ("max_curved_f", round(track.best_curved, 2)),
                ("pairs", float(track.pairs)),
                ("sheet_pairs", float(track.sheet_pairs)),
                ("blinks", float(track.actions.blinks)),
            ),
        )


def _sheet_like(pair: PairEvidence) -> bool:
    """The surface moved enough, a face moving as it did would have shown strong relief,
    and it showed none: a flat sheet."""
    return (
        pair.motion_iod >= SHEET_MIN_MOTION_IOD
        and pair.expected_relief_f >= FLAT_EXPECTED_F
        and pair.relief_f <= FLAT_RELIEF_F
    )
