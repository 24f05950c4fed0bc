"""MqttPublisher: the DoorBus over paho-mqtt 2.x (MQTT v5), backed by the on-disk journal.

Delivery model: the journal is the only source of truth for unacknowledged messages.
paho also keeps an in-memory queue and would resend it after a reconnect (possibly an
unlock that has expired meanwhile), so every (re)connect first drops paho's queue and
then resends the journal: unexpired unlocks first (a short-lived unlock must not wait
behind a backlog of events), then everything else in seq order; expired unlocks are skipped.

Journal failures (disk full, read-only filesystem) never propagate to the caller: an
unlock is then not sent at all (fail closed), an event or verify result is published
directly without the journal if connected (best effort: lost if the broker is not
reachable), and both are logged at ERROR.

Locking: ``_lock`` serialises journal appends with sends (keeps seq order on the wire)
and may be held while calling paho. ``_acks`` (mid -> seq bookkeeping) is taken inside
paho's on_publish, which runs with paho's message mutex held, so ``_acks`` is never held
while calling paho; that ordering rules out a lock cycle.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from paho.mqtt.client import (
    MQTT_ERR_SUCCESS,
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from facegate.config.mqtt import MqttConfig
from facegate.errors import BadInputError
from facegate.files import KIB, MIB, read_regular_file, read_regular_text
from facegate.keys import PrivateKey
from facegate.mqtt.bus import DoorBus, SignedUnlock, VerifyHandler, build_unlock
from facegate.mqtt.contract import prompt_payload
from facegate.mqtt.journal import DEFAULT_MAX_BYTES, EntryKind, Journal, JournalEntry
from facegate.mqtt.requests import parse_verify_request
from facegate.mqtt.signing import load_door_keys

logger = logging.getLogger(__name__)
# paho's own messages (every packet at DEBUG): a child logger, so they can be silenced alone.
_paho_logger = logging.getLogger(f"{__name__}.paho")

RESULT_TTL_S: Final = 30.0
#: RFC 7515 section 9.2.1: the media type of a JWS compact serialisation, sent as the MQTT v5
#: content type of every unlock so a controller can tell the contract version it receives.
UNLOCK_CONTENT_TYPE: Final = "application/jose"
MAX_INFLIGHT: Final = 100


def topic(prefix: str, door: str, kind: str) -> str:
    """``<prefix>/<door>/<kind>``, e.g. facegate/front/unlock."""
    return f"{prefix}/{door}/{kind}"


def _dumps(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _expiry_interval_s(expires_at: float, now: float) -> int:
    # MQTT expiry is whole seconds; round up so a valid unlock is never cut short by the
    # broker. The signed expires_at stays the authority for controllers.
    return max(1, math.ceil(expires_at - now))


def _printable(text: str, limit: int = 200) -> str:
    """Untrusted text for a log line: escaped (no fake lines) and bounded."""
    return repr(text[:limit])[1:-1]


def _network_thread_alive(client: Client) -> bool:
    # paho exposes no public "is the loop thread running"; its thread attribute is the
    # documented-by-source way (set by loop_start, cleared when the loop ends).
    thread = getattr(client, "_thread", None)
    return thread is not None and bool(thread.is_alive())


def check_door_id(door: str) -> None:
    """Reject door ids that would break the topic tree."""
    if not door or any(ch in door for ch in "/+#\x00"):
        raise ValueError(f"invalid door id {door!r}: must be non-empty, without / + # or NUL")


class MqttPublisher(DoorBus):
    """Publishes events, signed unlocks and verify results; receives verify requests."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        device: str,
        doors: Sequence[str],
        journal_dir: Path,
        signing_keys: Mapping[str, PrivateKey] | None = None,
        clock: Callable[[], float] = time.time,
        journal_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not doors:
            raise ValueError("MqttPublisher needs at least one door")
        for door in doors:
            check_door_id(door)
        self._config = config
        self._device = device
        self._doors = tuple(doors)
        self._prefix = config.topic_prefix
        self._clock = clock
        # door -> unlock key; without per-door keys every door signs with the shared one.
        if signing_keys is None:
            path, field = config.signing_key_path
            source = (path, field, config.signing_algorithm)
            signing_keys = load_door_keys({door: source for door in self._doors})
        if missing := set(self._doors) - set(signing_keys):
            raise ValueError(f"no signing key for doors {sorted(missing)}")
        self._keys = dict(signing_keys)
        if config.signing is None:
            logger.warning(
                "mqtt.signing_key_file is the old form of mqtt.signing (hs256): unlocks are JWS"
                " now and controllers must verify them as such (docs/migration-jws.md)"
            )
        self._journal = Journal(
            journal_dir,
            max_entries=config.journal_max_entries,
            max_bytes=journal_max_bytes,
            clock=clock,
        )
        self._lock = threading.RLock()
        self._acks = threading.Condition()
        self._inflight: dict[int, int | None] = {}  # paho mid -> journal seq (None: status)
        self._early_acks: set[int] = set()
        self._connected = False
        self._down_since: float | None = None  # monotonic; None while connected
        self._connected_event = threading.Event()
        self._subscribe_mid: int | None = None
        self._started = False
        self._closed = False
        self._failures = 0
        self._verify_handler: VerifyHandler | None = None
        self._client = self._make_client()
        # MQTT allows one will per connection: every further door gets its own small
        # connection whose will marks that door offline if the daemon dies.
        self._links = [
            _StatusLink(
                _base_client(config, f"{self.client_id}-status-{door}"),
                self._will(door),
                functools.partial(self._online_payload, door),
            )
            for door in self._doors[1:]
        ]

    # -- DoorBus ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself with capped backoff."""
        cfg = self._config
        logger.info("connecting to MQTT broker %s:%d as %s", cfg.host, cfg.port, self.client_id)
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)
        self._down_since = time.monotonic()
        self._client.loop_start()
        for link in self._links:
            link.start(cfg)
        self._started = True

    def supervise(self) -> None:
        """Restart paho's network thread if it died (it must not; this is the safety net).

        Our callbacks never raise and paho is told to suppress callback exceptions, so the
        thread only ends on disconnect(); anything else is a bug, logged and recovered."""
        if not self._started or self._closed or _network_thread_alive(self._client):
            return
        logger.error("MQTT network thread died; restarting it")
        self._client.loop_start()

    def down_for(self) -> float:
        """Seconds since the link was last connected; 0 while connected or before start."""
        down_since = self._down_since
        return 0.0 if down_since is None else time.monotonic() - down_since

    def set_verify_handler(self, handler: VerifyHandler | None) -> None:
        self._verify_handler = handler

    def publish_event(self, door: str, event: Mapping[str, object]) -> None:
        self._check_known_door(door)
        self._submit(EntryKind.EVENT, topic(self._prefix, door, "event"), _dumps(event))

    def publish_unlock(
        self,
        door: str,
        person: str,
        event_id: str,
        ttl_s: float | None = None,
        liveness: Mapping[str, object] | None = None,
    ) -> SignedUnlock | None:
        self._check_known_door(door)
        ttl = self._config.unlock_ttl_s if ttl_s is None else ttl_s
        with self._lock:
            try:
                seq = self._journal.next_seq()
            except OSError as exc:
                self._journal_failed(EntryKind.UNLOCK, topic(self._prefix, door, "unlock"), exc)
                return None
            key = self._keys[door]
            unlock = build_unlock(key, door, person, event_id, seq, self._clock(), ttl, liveness)
            if not self._submit(
                EntryKind.UNLOCK,
                topic(self._prefix, door, "unlock"),
                unlock.token.encode("ascii"),
                seq=seq,
                expires_at=unlock.expires_at,
            ):
                return None
        logger.info("unlock door=%s person=%s seq=%d event_id=%s", door, person, seq, event_id)
        return unlock

    def publish_verify_result(self, door: str, result: Mapping[str, object]) -> None:
        self._check_known_door(door)
        self._submit(
            EntryKind.RESULT,
            topic(self._prefix, door, "verify/result"),
            _dumps(result),
            expires_at=self._clock() + RESULT_TTL_S,
        )

    def publish_prompt(self, door: str, prompt: str | None, action: str | None = None) -> None:
        self._check_known_door(door)
        payload = _dumps(prompt_payload(door, prompt, self._clock(), action))
        info = self._client.publish(
            topic(self._prefix, door, "prompt"), payload, qos=1, retain=True
        )
        if info.rc == MQTT_ERR_SUCCESS:
            self._track(info.mid, None)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish retained offline, wait up to ``timeout_s`` for acks, disconnect."""
        # Links first: their clean disconnect sends no will, and they must not
        # republish "online" after the offline below.
        for link in self._links:
            link.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connected = self._connected
            if connected:
                for door in self._doors:
                    self._publish_status(door, "offline", reason="shutdown")
        if connected and not self.wait_all_acked(timeout_s):
            logger.warning(
                "closing with %d unacknowledged message(s) kept in the journal", len(self._journal)
            )
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
        logger.info("MQTT publisher closed")

    # -- observability (tests, service health) ---------------------------------------------

    @property
    def client_id(self) -> str:
        """The MQTT client id in use."""
        return self._config.client_id or f"facegate-{self._device}"

    @property
    def journal(self) -> Journal:
        """The on-disk journal (pending messages)."""
        return self._journal

    @property
    def is_connected(self) -> bool:
        """True between a successful CONNACK and the next disconnect."""
        return self._connected

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected, the journal resent and verify subscribed; False on timeout."""
        return self._connected_event.wait(timeout_s)

    def wait_all_acked(self, timeout_s: float) -> bool:
        """Block until the broker acknowledged everything sent; False on timeout."""
        with self._acks:
            return self._acks.wait_for(lambda: not self._inflight, timeout=timeout_s)

    # -- sending ---------------------------------------------------------------------------

    def _check_known_door(self, door: str) -> None:
        if door not in self._doors:
            raise ValueError(f"unknown door {door!r}; configured: {', '.join(self._doors)}")

    def _submit(
        self,
        kind: EntryKind,
        topic_name: str,
        payload: bytes,
        *,
        seq: int | None = None,
        expires_at: float | None = None,
    ) -> bool:
        """Journal and send; False if the journal failed and an unlock was not sent."""
        with self._lock:
            try:
                entry = self._journal.append(
                    kind, topic_name, payload, seq=seq, expires_at=expires_at
                )
            except OSError as exc:
                self._journal_failed(kind, topic_name, exc)
                if kind == EntryKind.UNLOCK:
                    return False
                self._publish_unjournaled(topic_name, payload, expires_at)
                return True
            if self._closed:
                logger.warning(
                    "publisher closed: %s seq=%d kept for the next start", kind, entry.seq
                )
            elif self._connected:
                self._send(entry)
            return True

    def _journal_failed(self, kind: EntryKind, topic_name: str, exc: OSError) -> None:
        if kind == EntryKind.UNLOCK:
            outcome = "unlock NOT sent (fail closed)"
        elif self._connected and not self._closed:
            outcome = f"{kind} published without the journal (best effort, no resend)"
        else:
            outcome = f"{kind} LOST (not connected)"
        logger.error(
            "MQTT journal %s unusable (%s): %s on %s",
            self._journal.directory,
            exc,
            outcome,
            topic_name,
        )

    def _publish_unjournaled(
        self, topic_name: str, payload: bytes, expires_at: float | None
    ) -> None:
        if not self._connected or self._closed:
            return  # paho would queue it in memory, but on_connect drops that queue
        properties: Properties | None = None
        if expires_at is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = _expiry_interval_s(expires_at, self._clock())
        info = self._client.publish(topic_name, payload, qos=1, retain=False, properties=properties)
        if info.rc == MQTT_ERR_SUCCESS:
            self._track(info.mid, None)

    def _send(self, entry: JournalEntry) -> None:
        now = self._clock()
        properties: Properties | None = None
        if entry.expires_at is not None:
            if entry.expired(now):
                logger.info("not sending expired %s seq=%d", entry.kind, entry.seq)
                self._journal.ack(entry.seq)
                return
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = _expiry_interval_s(entry.expires_at, now)
            if entry.kind == EntryKind.UNLOCK:
                properties.ContentType = UNLOCK_CONTENT_TYPE
        info = self._client.publish(
            entry.topic, entry.payload, qos=1, retain=False, properties=properties
        )
        if info.rc == MQTT_ERR_SUCCESS:
            self._track(info.mid, entry.seq)
        else:
            # Stays in the journal; the next on_connect resends it.
            logger.debug("publish of seq=%d deferred: %s", entry.seq, info.rc)

    def _publish_status(self, door: str, state: str, **extra: object) -> None:
        payload: dict[str, object] = {
            "state": state,
            "device": self._device,
            "door": door,
            "ts": self._clock(),
        }
        payload.update(extra)
        info = self._client.publish(
            topic(self._prefix, door, "status"), _dumps(payload), qos=1, retain=True
        )
        if info.rc == MQTT_ERR_SUCCESS:
            self._track(info.mid, None)

    def _track(self, mid: int, seq: int | None) -> None:
        with self._acks:
            if mid in self._early_acks:
                # PUBACK overtook the bookkeeping (fast local broker).
                self._early_acks.discard(mid)
                self._complete(seq)
            else:
                self._inflight[mid] = seq

    def _complete(self, seq: int | None) -> None:
        if seq is not None:
            self._journal.ack(seq)
        self._acks.notify_all()

    # -- paho client and callbacks (run on paho's network thread) ---------------------------

    def _make_client(self) -> Client:
        client = _base_client(self._config, self.client_id)
        client.will_set(*self._will(self._doors[0]))
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _will(self, door: str) -> tuple[str, bytes, int, bool]:
        payload = {
            "state": "offline",
            "device": self._device,
            "door": door,
            "reason": "connection lost",
        }
        return topic(self._prefix, door, "status"), _dumps(payload), 1, True

    def _online_payload(self, door: str) -> bytes:
        return _dumps(
            {"state": "online", "device": self._device, "door": door, "ts": self._clock()}
        )

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._note_failure("broker refused the connection: %s", reason_code)
            return
        with self._lock:
            # paho would resend its own copies; the journal is the one source of truth.
            client.drop_out_messages()
            with self._acks:
                self._inflight.clear()
                self._early_acks.clear()
            # A retained request is an old claim, not a person at the door now: never sent.
            options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            _, self._subscribe_mid = client.subscribe(
                topic(self._prefix, "+", "verify"), options=options
            )
            self._publish_status(self._doors[0], "online")
            pending = self._journal.pending()  # drops expired unlocks
            # Unlocks first: behind thousands of QoS1 events a 5 s unlock would arrive dead.
            unlocks = [e for e in pending if e.kind == EntryKind.UNLOCK]
            others = [e for e in pending if e.kind != EntryKind.UNLOCK]
            for entry in unlocks + others:
                self._send(entry)
            self._connected = True
            self._down_since = None
        self._failures = 0
        logger.info(
            "MQTT connected to %s:%d; resent %d pending message(s)",
            self._config.host,
            self._config.port,
            len(pending),
        )

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        if any(code.is_failure for code in reason_codes):
            logger.error("broker refused the verify subscription: %s", reason_codes)
        # Ready means a verify request sent from now on reaches us.
        self._connected_event.set()

    def _on_connect_fail(self, client: Client, userdata: Any) -> None:
        self._note_failure(
            "cannot connect to MQTT broker %s:%d", self._config.host, self._config.port
        )

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected = False
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._connected_event.clear()
        if not self._closed:
            self._note_failure("MQTT connection lost: %s; events are journaled", reason_code)

    def _note_failure(self, message: str, *args: object) -> None:
        # WARNING once per outage, then DEBUG, so a long outage does not flood the journal.
        level = logging.WARNING if self._failures == 0 else logging.DEBUG
        self._failures += 1
        logger.log(level, message, *args)

    def _on_publish(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._acks:
            if mid not in self._inflight:
                self._early_acks.add(mid)
                return
            seq = self._inflight.pop(mid)
            if reason_code.is_failure:
                # Retrying a refusal (e.g. ACL) would only block the journal.
                logger.error("broker refused message seq=%s: %s; dropped", seq, reason_code)
            self._complete(seq)

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        # Runs on paho's network thread: an exception here would end it, and with it every
        # unlock. Nothing may escape; the parser itself is total, this is the last guard.
        try:
            self._take_message(message)
        except Exception:
            logger.exception("incoming message on %r dropped", _printable(message.topic))

    def _take_message(self, message: MQTTMessage) -> None:
        if message.retain:
            # Subscribed with "do not send retained"; a broker that ignores it still must
            # not turn an old claim into a fresh one at every reconnect.
            logger.warning("retained verify request on %r ignored", _printable(message.topic))
            return
        request = parse_verify_request(
            message.topic, bytes(message.payload), self._prefix, self._doors
        )
        handler = self._verify_handler
        if request is None:
            return
        if handler is None:
            logger.warning("verify request %r ignored: no handler", request.request_id)
            return
        handler(request)


class _StatusLink:
    """A connection that only carries one door's retained online status and its will."""

    def __init__(
        self,
        client: Client,
        will: tuple[str, bytes, int, bool],
        online: Callable[[], bytes],
    ) -> None:
        self._client = client
        self._topic = will[0]
        self._online = online
        self._started = False
        client.will_set(*will)
        client.on_connect = self._on_connect

    def start(self, cfg: MqttConfig) -> None:
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()
        self._started = True

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            client.publish(self._topic, self._online(), qos=1, retain=True)

    def close(self) -> None:
        if self._started:
            self._started = False
            self._client.disconnect()
            self._client.loop_stop()


def _base_client(cfg: MqttConfig, client_id: str) -> Client:
    """A paho v5 client with credentials, TLS and reconnect backoff from the config."""
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    # A callback that raises is logged (with paho's message) instead of ending the thread.
    client.suppress_exceptions = True
    client.enable_logger(_paho_logger)
    if cfg.username is not None:
        password = _read_password(cfg.password_file) if cfg.password_file else None
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        _set_tls(client, cfg)
    client.reconnect_delay_set(
        max(1, math.ceil(cfg.reconnect_min_s)), max(1, math.ceil(cfg.reconnect_max_s))
    )
    return client


def _read_password(path: Path) -> str:
    """The broker password: a regular file of at most 4 KiB, one line (check-config uses this
    very function, so it refuses exactly what `run` would)."""
    text = read_regular_text(path, 4 * KIB, field="mqtt.password_file", what="password file")
    return text.rstrip("\r\n")


def _set_tls(client: Client, cfg: MqttConfig) -> None:
    tls = cfg.tls
    assert tls is not None
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is not None:
            # OpenSSL would block on a FIFO or read a device without end: refuse those first.
            read_regular_file(path, MIB, field=f"mqtt.tls.{name}", what="TLS file")
    try:
        client.tls_set(
            ca_certs=str(tls.ca_file),
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
        )
    except (OSError, ssl.SSLError) as exc:
        # tls_set loads the files now: name them so the user knows what to fix.
        files = ", ".join(str(p) for p in (tls.ca_file, tls.cert_file, tls.key_file) if p)
        raise BadInputError(files, f"cannot load TLS files: {exc}", field="mqtt.tls") from None
