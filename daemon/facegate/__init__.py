"""facegate: face-recognition access control for the edge."""

__version__ = "0.1.0"
