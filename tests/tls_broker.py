"""A real mosquitto on 127.0.0.1 with the TLS + password + ACL example from systemd/mosquitto.

Reusable by any test that needs the production-shaped broker::

    with tls_broker(tmp_path) as broker:
        client.tls_set(ca_certs=str(broker.ca_file))
        client.username_pw_set("facegate", broker.passwords["facegate"])
        client.connect(broker.host, broker.port)

The broker runs `systemd/mosquitto/facegate.conf` and `systemd/mosquitto/acl` as shipped,
with only paths and the listener port rewritten, and certificates made by
`scripts/gen-test-certs.sh`. Everything lives under the caller's directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
EXAMPLE_DIR: Final = ROOT / "systemd" / "mosquitto"
GEN_CERTS: Final = ROOT / "scripts" / "gen-test-certs.sh"
MOSQUITTO: Final = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD: Final = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
DEFAULT_USERS: Final = ("facegate", "door-front", "door-back")
START_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class TlsBroker:
    """Where the running broker listens and what a client needs to log in."""

    host: str
    port: int
    certs_dir: Path
    ca_file: Path
    passwords: Mapping[str, str]
    conf_file: Path
    log_file: Path

    def client_cert(self, user: str) -> tuple[Path, Path]:
        """(cert, key) issued by the test CA for `user`, CN = user."""
        return self.certs_dir / f"{user}.crt", self.certs_dir / f"{user}.key"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def tools_missing() -> list[str]:
    """Names of the executables this helper needs that are not installed."""
    need = {"mosquitto": MOSQUITTO, "mosquitto_passwd": MOSQUITTO_PASSWD, "openssl": "openssl"}
    return [name for name, path in need.items() if shutil.which(path) is None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def generate_certs(out_dir: Path, *hosts: str) -> Path:
    """Run scripts/gen-test-certs.sh into out_dir; returns out_dir."""
    users = " ".join(DEFAULT_USERS)
    subprocess.run(
        ["bash", str(GEN_CERTS), str(out_dir), *hosts],
        check=True,
        capture_output=True,
        timeout=60,
        env={**os.environ, "CLIENTS": users},
    )
    return out_dir


def write_password_file(path: Path, passwords: Mapping[str, str]) -> None:
    for i, (user, password) in enumerate(passwords.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [MOSQUITTO_PASSWD, *create, "-b", str(path), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )


def adapt_example_conf(
    example: str, *, port: int, certs_dir: Path, passwd: Path, acl: Path, log_file: Path
) -> str:
    """The shipped example with its paths and port pointed at test files."""
    replace = {
        "listener": f"listener {port} 127.0.0.1",
        "cafile": f"cafile {certs_dir / 'ca.crt'}",
        "certfile": f"certfile {certs_dir / 'server.crt'}",
        "keyfile": f"keyfile {certs_dir / 'server.key'}",
        "password_file": f"password_file {passwd}",
        "acl_file": f"acl_file {acl}",
    }
    seen: set[str] = set()
    lines = []
    for line in example.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() and not line.startswith("#") else ""
        if key in replace:
            seen.add(key)
            line = replace[key]
        lines.append(line)
    missing = set(replace) - seen
    if missing:
        raise ValueError(f"example mosquitto config lacks {sorted(missing)}")
    # Test-only additions: no persistence file, a log we can show on failure, and no
    # switch to the "mosquitto" user when the tests run as root (it could not read tmp).
    lines += ["persistence false", f"log_dest file {log_file}", "log_type all"]
    if os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n"


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            logs = [log_file, log_file.with_name("mosquitto.stderr")]
            log = "".join(p.read_text(errors="replace") for p in logs if p.exists())
            raise RuntimeError(f"mosquitto exited with {proc.returncode}:\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"mosquitto did not listen on 127.0.0.1:{port} in {START_TIMEOUT_S}s")


@contextmanager
def tls_broker(work_dir: Path, users: tuple[str, ...] = DEFAULT_USERS) -> Iterator[TlsBroker]:
    """Start mosquitto with the example TLS/ACL config under work_dir; stop it on exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    certs_dir = generate_certs(work_dir / "certs")
    passwords = {user: secrets.token_urlsafe(12) for user in users}
    passwd = work_dir / "facegate.passwd"
    write_password_file(passwd, passwords)
    acl = work_dir / "facegate.acl"
    shutil.copyfile(EXAMPLE_DIR / "acl", acl)
    port = free_port()
    log_file = work_dir / "mosquitto.log"
    conf = work_dir / "mosquitto.conf"
    conf.write_text(
        adapt_example_conf(
            (EXAMPLE_DIR / "facegate.conf").read_text(),
            port=port,
            certs_dir=certs_dir,
            passwd=passwd,
            acl=acl,
            log_file=log_file,
        )
    )
    # mosquitto reports config errors on stderr before it opens its log file.
    with (work_dir / "mosquitto.stderr").open("wb") as stderr:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=stderr, stderr=stderr)
    try:
        _wait_listening(proc, port, log_file)
        yield TlsBroker(
            host="127.0.0.1",
            port=port,
            certs_dir=certs_dir,
            ca_file=certs_dir / "ca.crt",
            passwords=passwords,
            conf_file=conf,
            log_file=log_file,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
