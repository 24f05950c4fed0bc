"""systemd's sd_notify protocol: READY=1, WATCHDOG=1, ... as datagrams to $NOTIFY_SOCKET.

The protocol is one datagram per message to a Unix socket (a leading "@" means the
abstract namespace). It is small enough to carry here, which keeps every runtime
dependency a wheel on the Pi (the `sdnotify` package ships only an sdist). Without
$NOTIFY_SOCKET (not under systemd) every call is a no-op; a send that fails is logged once
and never raised: the door must not stop because systemd is not listening.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages; safe to use outside systemd."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._warned = False
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def notify(self, message: str) -> None:
        """Send one message (e.g. "READY=1"); nothing happens outside systemd."""
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._warned:
                logger.warning("sd_notify to %s failed: %s", self._address.lstrip("\0"), exc)
                self._warned = True
