"""Frame sources (picamera2, OpenCV device/URL/file, image folder) and the latest-frame grabber.

Backends import cv2 and picamera2 only when opened.
"""

from facegate.camera.backoff import Backoff
from facegate.camera.base import Frame, FrameSource, Pacer, RGBImage, SourceKind, SourceValue
from facegate.camera.factory import (
    SOURCE_TYPES,
    CameraConfigLike,
    CameraSourceLike,
    make_source,
    open_source,
    source_from_config,
)
from facegate.camera.folder import ImageFolderSource
from facegate.camera.grabber import LatestFrameGrabber
from facegate.camera.opencv import DeviceSource, OpenCVCaptureSource, StreamSource, VideoFileSource
from facegate.camera.picamera2 import Picamera2Source

__all__ = [
    "SOURCE_TYPES",
    "Backoff",
    "CameraConfigLike",
    "CameraSourceLike",
    "DeviceSource",
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "LatestFrameGrabber",
    "OpenCVCaptureSource",
    "Pacer",
    "Picamera2Source",
    "RGBImage",
    "SourceKind",
    "SourceValue",
    "StreamSource",
    "VideoFileSource",
    "make_source",
    "open_source",
    "source_from_config",
]
