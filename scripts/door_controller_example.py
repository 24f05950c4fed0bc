#!/usr/bin/env python3
"""Example door controller: verify facegate unlocks and pulse a relay.

Subscribes to ``<prefix>/<door>/unlock`` and ``<prefix>/<door>/status``, checks every
unlock (a JWS) with the reference ``UnlockVerifier`` (signature, door, expiry, replay)
against the door's public key (Ed25519 PEM, the default) or its HS256 secret, and prints
``UNLOCK door=.. person=.. seq=..`` or ``REJECTED reason=..``. With ``--gpio-pin`` and
gpiozero installed, an accepted unlock drives the pin high for ``--pulse-s`` seconds.

Every message is untrusted: the broker drops packets above ``MAX_PACKET_BYTES`` for this
client (MQTT v5 Maximum Packet Size), the verifier rejects anything but a genuine unlock,
and a message that fails in any other way costs one log line, never the MQTT thread.

Exit status: 0 after ``--count`` unlocks (or at ``--timeout`` when no count was asked
for, or on SIGTERM/SIGINT), 1 when the timeout hits before ``--count`` unlocks, 2 on bad
arguments or key. Every exit path switches the relay off and releases it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Final

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from facegate.errors import BadInputError
from facegate.keys import load_public_key
from facegate.mqtt.signing import MAX_UNLOCK_BYTES, UnlockRejected, UnlockVerifier

logger = logging.getLogger("door_controller")

# Room for an unlock (the verifier rejects more than MAX_UNLOCK_BYTES), its topic and
# properties; the broker never sends us a bigger packet, so none is ever read into memory.
MAX_PACKET_BYTES: Final = MAX_UNLOCK_BYTES + 4096
MAX_STATUS_CHARS: Final = 200


class Relay:
    """The door strike: a gpiozero OutputDevice when available, else print only.

    ``device`` replaces the GPIO device (anything with on/off/close), e.g. in tests.
    One off-timer at most: an unlock during a pulse restarts it, so the pulse is extended
    rather than cut short by the earlier timer.
    """

    def __init__(self, pin: int | None, pulse_s: float, *, device: Any = None) -> None:
        self._pulse_s = pulse_s
        self._device: Any = device
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False
        if device is not None or pin is None:
            return
        try:
            from gpiozero import OutputDevice
        except ImportError:
            print(f"gpiozero not installed: pin {pin} not driven", file=sys.stderr)
            return
        self._device = OutputDevice(pin, active_high=True, initial_value=False)

    def pulse(self) -> None:
        if self._device is None:
            return
        with self._lock:
            if self._closed:
                return
            self._device.on()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._pulse_s, self._off)
            self._timer.daemon = True
            self._timer.start()

    def _off(self) -> None:
        with self._lock:
            # A timer that fired while pulse() was restarting it is stale: leave the pin on.
            if self._closed or self._timer is not threading.current_thread():
                return
            self._timer = None
            self._device.off()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._device is not None:
                self._device.off()
                self._device.close()
        logger.info("relay released")


class Controller:
    """Glue between MQTT messages, the verifier and the relay."""

    def __init__(self, args: argparse.Namespace, verifier: UnlockVerifier, relay: Relay) -> None:
        self.unlock_topic = f"{args.prefix}/{args.door}/unlock"
        self.status_topic = f"{args.prefix}/{args.door}/status"
        self.verifier = verifier
        self.relay = relay
        self.wanted = args.count
        self.accepted = 0
        self.done = threading.Event()

    def on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            print(f"broker refused connection: {reason_code}", file=sys.stderr, flush=True)
            return
        client.subscribe([(self.unlock_topic, 1), (self.status_topic, 1)])

    def on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        # paho calls this on its network thread: an exception escaping from here would end
        # the thread, and no later unlock would ever be read.
        try:
            self.handle(message.topic, bytes(message.payload))
        except Exception as exc:  # noqa: BLE001 - one line, then on to the next message
            logger.error("message on %r not handled: %r", message.topic, exc)

    def handle(self, topic: str, payload: bytes) -> None:
        """Print a status, or verify an unlock and pulse the relay."""
        if topic == self.status_topic:
            print(f"STATUS {_escaped(payload[: MAX_STATUS_CHARS * 4])}", flush=True)
            return
        try:
            unlock = self.verifier.verify(payload)
        except UnlockRejected as exc:
            print(f"REJECTED reason={exc.reason}", flush=True)
            return
        # Signed by facegate: door and person are its own ids, printed as they are.
        print(f"UNLOCK door={unlock.door} person={unlock.person} seq={unlock.seq}", flush=True)
        self.relay.pulse()
        self.accepted += 1
        if self.wanted is not None and self.accepted >= self.wanted:
            self.done.set()


def _escaped(payload: bytes) -> str:
    """One printable line: anyone on the broker can publish a status with a newline."""
    text = payload.decode("utf-8", errors="replace")[:MAX_STATUS_CHARS]
    return text.encode("unicode_escape").decode("ascii")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="facegate", help="topic prefix")
    parser.add_argument("--door", required=True, help="door id this controller opens")
    parser.add_argument(
        "--key-file",
        type=Path,
        required=True,
        help="this door's public key (.pub, Ed25519 PEM) or its HS256 hex secret",
    )
    parser.add_argument("--tls-ca", type=Path, help="CA file; enables TLS")
    parser.add_argument("--cert", type=Path, help="client certificate (TLS)")
    parser.add_argument("--key", type=Path, help="client private key (TLS)")
    parser.add_argument("--username")
    parser.add_argument("--password-file", type=Path)
    parser.add_argument("--client-id", default="", help="MQTT client id (default: broker's)")
    parser.add_argument("--count", type=int, help="exit after N verified unlocks")
    parser.add_argument("--timeout", type=float, help="exit after S seconds")
    parser.add_argument("--gpio-pin", type=int, help="BCM pin of the door strike relay")
    parser.add_argument("--pulse-s", type=float, default=1.0, help="relay on-time, seconds")
    parser.add_argument("--max-skew-s", type=float, default=2.0, help="tolerated clock skew")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if (args.cert or args.key) and args.tls_ca is None:
        parser.error("--cert/--key need --tls-ca")
    if args.count is not None and args.count < 1:
        parser.error("--count must be >= 1")
    return args


def make_client(args: argparse.Namespace, controller: Controller) -> Client:
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if args.username:
        password = None
        if args.password_file:
            password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        client.username_pw_set(args.username, password)
    if args.tls_ca:
        client.tls_set(
            ca_certs=str(args.tls_ca),
            certfile=str(args.cert) if args.cert else None,
            keyfile=str(args.key) if args.key else None,
        )
    client.on_connect = controller.on_connect
    client.on_message = controller.on_message
    # A second net under on_message: an exception in any callback is logged, not fatal.
    client.suppress_exceptions = True
    client.enable_logger(logger)
    client.reconnect_delay_set(1, 10)
    return client


def main(argv: list[str] | None = None, *, relay: Relay | None = None) -> int:
    """Run the controller; ``relay`` overrides the one built from ``--gpio-pin`` (tests)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        key = load_public_key(args.key_file, field="--key-file")
        verifier = UnlockVerifier(key, args.door, max_skew_s=args.max_skew_s)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if relay is None:
        relay = Relay(args.gpio_pin, args.pulse_s)
    controller = Controller(args, verifier, relay)
    try:
        client = make_client(args, controller)
    except (OSError, ValueError) as exc:
        relay.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop_signals: list[int] = []
    previous = _install_stop_handlers(stop_signals)
    client.connect_async(args.host, args.port, keepalive=30, properties=_connect_properties())
    client.loop_start()
    try:
        finished = _wait_done(controller.done, args.timeout, stop_signals)
    finally:
        client.disconnect()
        client.loop_stop()
        controller.relay.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop_signals:
        logger.info("stopped by %s", signal.Signals(stop_signals[0]).name)
    if args.count is not None and not finished:
        print(f"TIMEOUT after {controller.accepted} of {args.count} unlocks", flush=True)
        return 1
    return 0


def _connect_properties() -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.MaximumPacketSize = MAX_PACKET_BYTES
    return properties


def _install_stop_handlers(stop_signals: list[int]) -> dict[int, Any]:
    """SIGTERM (systemctl stop) and SIGINT end the wait so the relay is switched off.

    The handler only records the signal: setting a threading.Event from a handler can
    deadlock if the signal lands while the main thread holds the event's lock.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_signals.append(signum)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}


def _wait_done(done: threading.Event, timeout: float | None, stop_signals: list[int]) -> bool:
    """Wait for ``done`` (True), a stop signal (True) or the timeout (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not stop_signals:
        step = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
        if step <= 0:
            return done.is_set()
        if done.wait(step):
            return True
    return True


if __name__ == "__main__":
    sys.exit(main())
