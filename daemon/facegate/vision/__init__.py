"""Face detection, alignment and embedding on the TFLite runtime."""
