"""Issue 11, findings 5, 6 and 11 (config side): config and secret-file parsers are total.

Whatever a config, enrollment, key, password or TLS file holds or is (a FIFO, /dev/zero, an
alias bomb, 5,000 nested brackets, an infinite delay), `check-config` answers at once with
exit 2 and a message naming the file and the field; nothing else escapes `load_config` or
`load_enrollment`. Regression tests first, then property-based fuzzing with hypothesis.

The sites here hold placeholder model files: check-config only checks that the models are
present and readable, and these tests are about the files checked after them.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from hypothesis import strategies as st
from pydantic import ValidationError

from facegate.cli import main
from facegate.config import MqttConfig, load_config, load_enrollment
from facegate.config.loader import MAX_DEPTH, MAX_NODES
from facegate.errors import BadInputError, ConfigError
from facegate.files import KIB, read_regular_file, read_regular_text
from facegate.vision.engine import MODEL_FILES
from fuzzing import fuzz_batches, mutate_bytes, mutate_text, rand_bytes, rand_json, rand_text
from scenes import empty_frame, write_config, write_enrollment, write_folder, write_key
from tls_broker import generate_certs

REPO: Final = Path(__file__).resolve().parents[1]
REAL_CONFIG: Final = (REPO / "config" / "facegate.yaml").read_text()
REAL_ENROLLMENT: Final = (REPO / "config" / "enrollment.yaml").read_text()
# A FIFO or device must be refused at once; far above the ~0.5 s a check-config takes.
PROMPT_S: Final = 30.0


# -- a site check-config accepts --------------------------------------------------------------


def make_site(root: Path, mqtt_extra: dict[str, object] | None = None) -> Path:
    """facegate.yaml with key, empty enrollment, camera folder, journal and placeholder models."""
    write_key(root / "hmac.key")
    write_enrollment(root / "enrollment.yaml", {})
    write_folder(root / "camera", [empty_frame()])
    (root / "journal").mkdir()
    models = root / "models"
    models.mkdir()
    for name in MODEL_FILES.values():
        (models / name).write_bytes(b"placeholder")
    cameras = [{"door": "front", "source": "camera/"}]
    return write_config(
        root / "facegate.yaml", port=1883, cameras=cameras, mqtt_extra=mqtt_extra, models_dir=models
    )


def check_config(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`facegate check-config` in-process: exit code and stderr."""
    code = main(["check-config", "--config", str(config)])
    return code, capsys.readouterr().err


def check_config_process(config: Path) -> subprocess.CompletedProcess[str]:
    """`facegate check-config` as a process: a hang fails the test instead of blocking it."""
    return subprocess.run(
        [sys.executable, "-m", "facegate", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=PROMPT_S,
    )


def with_mqtt(config: Path, extra: str) -> Path:
    """Add raw YAML `key: value` pairs to the flow mapping of the mqtt section."""
    text = config.read_text()
    assert "mqtt: {" in text
    config.write_text(text.replace("mqtt: {", "mqtt: {" + extra + ", "))
    return config


def test_the_site_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check_config(make_site(tmp_path), capsys)
    assert code == 0, err


# -- files.read_regular_file --------------------------------------------------------------------


def test_a_regular_file_and_a_symlink_to_one_are_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 100)
    link = tmp_path / "link"
    link.symlink_to(secret)
    assert read_regular_file(secret, 100) == b"x" * 100  # exactly at the limit
    assert read_regular_file(link, 100) == b"x" * 100


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(BadInputError) as caught:
        read_regular_file(tmp_path / "absent", 10, field="mqtt.password_file", what="password file")
    assert caught.value.source == str(tmp_path / "absent")
    assert caught.value.field == "mqtt.password_file"
    assert caught.value.detail == "password file not found"


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # In a child process: if the open blocked (no writer ever comes), the timeout fails the test.
    code = (
        "import sys; from pathlib import Path; from facegate.errors import BadInputError\n"
        "from facegate.files import read_regular_file\n"
        "try:\n    read_regular_file(Path(sys.argv[1]), 4096, field='f')\n"
        "except BadInputError as exc:\n    print(exc)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=PROMPT_S
    )
    assert time.monotonic() - started < PROMPT_S
    assert done.stdout.strip() == f"{fifo}: f: file is a FIFO, not a regular file", done.stderr


def test_a_fifo_with_a_writer_is_refused_too(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never stops: cat > fifo
    try:
        with pytest.raises(BadInputError, match="is a FIFO"):
            read_regular_file(fifo, 4096)
    finally:
        os.close(writer)


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("/dev/zero", "a character device"),
        ("/dev/null", "a character device"),
        (".", "a directory"),
    ],
)
def test_a_symlink_to_a_device_or_directory_is_refused(
    tmp_path: Path, target: str, kind: str
) -> None:
    link = tmp_path / "key"
    link.symlink_to(target if target != "." else tmp_path)
    with pytest.raises(BadInputError) as caught:
        read_regular_file(link, 4096, field="mqtt.signing_key_file", what="signing key file")
    assert kind in caught.value.detail and "not a regular file" in caught.value.detail
    assert "symlink to" in caught.value.detail  # says where it really points
    assert caught.value.field == "mqtt.signing_key_file"


def test_an_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as handle:
        handle.truncate(2 * 1024**3)  # 2 GiB, sparse: reading it would take seconds and memory
    started = time.monotonic()
    with pytest.raises(BadInputError) as caught:
        read_regular_file(big, 4 * KIB)
    assert time.monotonic() - started < 1.0
    assert caught.value.detail == f"file is larger than 4 KiB ({2 * 1024**3} bytes)"


def test_a_file_larger_than_its_stat_size_is_cut_at_the_limit() -> None:
    # /proc files report size 0 and then hold more: the read itself is bounded too.
    with pytest.raises(BadInputError, match="larger than 16 bytes"):
        read_regular_file(Path("/proc/self/status"), 16)


def test_other_os_errors_say_why(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(BadInputError, match="cannot read file: Too many levels of symbolic links"):
        read_regular_file(loop, 10)
    with pytest.raises(BadInputError, match="path contains a NUL byte"):
        read_regular_file(tmp_path / "a\0b", 10)


def test_text_that_does_not_decode_names_its_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(BadInputError) as caught:
        read_regular_text(latin1, 100, field="f")
    assert (caught.value.line, caught.value.detail) == (2, "not UTF-8 text (byte 6)")
    with pytest.raises(BadInputError, match="not ASCII text"):
        read_regular_text(latin1, 100, encoding="ascii")
    assert read_regular_text(latin1, 100, encoding="latin-1") == "ok\ncafé\n"


# -- finding 5: YAML that is too deep or expands too far ----------------------------------------

DEEP = "[" * 5000 + "]" * 5000


def alias_bomb(levels: int) -> str:
    """`a: &a [x x 9]`, `b: &b [*a x 9]`, ...: 9**levels nodes from a few hundred bytes."""
    names = [f"lol{i}" for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip(names, names[1:], strict=False):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_deep_nesting_is_refused_with_its_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_site(tmp_path)
    config.write_text(config.read_text() + f"extra: {DEEP}\n")
    code, err = check_config(config, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{config}:10: extra: nested more than {MAX_DEPTH} levels deep" in err


def test_a_whole_file_of_brackets_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "facegate.yaml"
    config.write_text(DEEP + "\n")
    with pytest.raises(ConfigError, match="nested more than"):
        load_config(config)


def test_nesting_through_aliases_is_counted_too(tmp_path: Path) -> None:
    # Each line nests one level deeper than the one it names: shallow text, deep data.
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, 100)]
    enrollment = tmp_path / "enrollment.yaml"
    enrollment.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="nested more than") as caught:
        load_enrollment(enrollment)
    assert caught.value.field is not None and caught.value.field.startswith("l")


@pytest.mark.parametrize("levels", [7, 8], ids=["18 s and 1.2 GB before", "MemoryError before"])
def test_an_alias_bomb_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], levels: int
) -> None:
    config = make_site(tmp_path)
    config.write_text(config.read_text() + alias_bomb(levels))
    assert config.stat().st_size < 2048
    started = time.monotonic()
    code, err = check_config(config, capsys)
    took = time.monotonic() - started
    assert code == 2 and "Traceback" not in err
    assert str(config) in err and ": lol" in err  # the file, and the key that expands
    assert f"YAML expands to more than {MAX_NODES} nodes (alias bomb?)" in err
    assert took < 5.0  # a bound, not a benchmark: about 0.15 s here


def test_a_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    # `<<` merges copy the merged pairs into each mapping: 9**7 pairs without counting.
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(9)) + "}"]
    lines += [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 9) + "]}" for i in range(1, 8)]
    enrollment = tmp_path / "enrollment.yaml"
    enrollment.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_enrollment(enrollment)


def test_a_huge_flat_file_stops_at_the_node_limit(tmp_path: Path) -> None:
    # The composer's own count of plain nodes (aliases are counted apart, alias bomb tests).
    limit = MAX_NODES
    enrollment = tmp_path / "enrollment.yaml"
    enrollment.write_text("people: [" + "1," * 3 * limit + "1]\n")
    with pytest.raises(ConfigError, match=f"more than {limit} YAML nodes"):
        load_enrollment(enrollment)
    # Exactly at the limit (the root mapping, its key, the list and limit - 3 items) it is
    # composed: what is wrong with it then is the unknown key, not the size.
    enrollment.write_text("unknown: [" + "1," * (limit - 4) + "1]\n")
    with pytest.raises(ConfigError) as caught:
        load_enrollment(enrollment)
    assert caught.value.field == "unknown" and "YAML nodes" not in str(caught.value)


def test_a_file_over_one_mib_is_refused_unread(tmp_path: Path) -> None:
    config = tmp_path / "facegate.yaml"
    config.write_text("# padding\n" * 110_000)
    with pytest.raises(ConfigError, match="file is larger than 1 MiB"):
        load_config(config)


def test_five_hundred_people_still_load(tmp_path: Path) -> None:
    people = "".join(
        f"  - id: person_{i:04d}\n    name: Person {i}\n"
        f"    images: [p{i}/front.jpg, p{i}/side.jpg, p{i}/more/]\n"
        "    doors: [front, back, garage]\n    schedule: office\n"
        "    valid_from: 2024-01-01\n    valid_until: 2099-12-31T18:00:00+01:00\n"
        for i in range(500)
    )
    enrollment = tmp_path / "enrollment.yaml"
    enrollment.write_text(
        "schedules:\n  office:\n    timezone: Europe/Berlin\n"
        '    windows: [{days: weekdays, start: "07:00", end: "19:00"}]\n'
        "people:\n" + people
    )
    started = time.monotonic()
    loaded = load_enrollment(enrollment)
    assert len(loaded.people) == 500 and loaded.people[-1].id == "person_0499"
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0x_", "cannot read '0x_' as int"),
        ("!!bool maybe", "cannot read 'maybe' as bool"),
        ("!!timestamp soon", "cannot read 'soon' as timestamp"),
        ("1" * 5000, "as int"),  # past Python's int-from-string digit limit
        ("'\x01'", "character U+0001 is not allowed in YAML"),
        ('"a\\0b"', "NUL character in a value"),
    ],
)
def test_values_pyyaml_itself_chokes_on_are_config_errors(
    tmp_path: Path, value: str, message: str
) -> None:
    enrollment = tmp_path / "enrollment.yaml"
    enrollment.write_text(f"timezone: UTC\npeople:\n  - id: {value}\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_enrollment(enrollment)
    assert caught.value.line == 3


def test_a_timezone_that_is_a_folder_of_the_zone_database_is_invalid(tmp_path: Path) -> None:
    enrollment = tmp_path / "enrollment.yaml"
    enrollment.write_text("timezone: America\n")  # ZoneInfo raised IsADirectoryError
    with pytest.raises(ConfigError, match="unknown IANA timezone"):
        load_enrollment(enrollment)


def test_an_unknown_home_folder_is_left_as_written(tmp_path: Path) -> None:
    config = make_site(tmp_path)
    config.write_text(config.read_text().replace("journal: journal", "journal: ~nosuchuser/j"))
    assert load_config(config).journal == tmp_path / "~nosuchuser" / "j"  # was RuntimeError


# -- finding 6: key, enrollment, password and TLS files that are not regular files -----------


def test_a_dev_zero_signing_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_site(tmp_path)
    (tmp_path / "hmac.key").unlink()
    (tmp_path / "hmac.key").symlink_to("/dev/zero")
    code, err = check_config(config, capsys)
    assert code == 2
    assert f"{tmp_path / 'hmac.key'}: mqtt.signing_key_file: signing key file is a character" in err
    assert "symlink to /dev/zero" in err


def test_a_dev_zero_enrollment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_site(tmp_path)
    (tmp_path / "enrollment.yaml").unlink()
    (tmp_path / "enrollment.yaml").symlink_to("/dev/zero")
    code, err = check_config(config, capsys)
    assert code == 2
    assert f"{config}: enrollment: {tmp_path / 'enrollment.yaml'}: file is a character" in err


def test_a_dev_zero_password_file_is_refused_as_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_site(tmp_path, {"username": "facegate", "password_file": "mqtt.password"})
    (tmp_path / "mqtt.password").write_text("s3cret\n")
    assert check_config(config, capsys)[0] == 0
    (tmp_path / "mqtt.password").unlink()
    (tmp_path / "mqtt.password").symlink_to("/dev/zero")
    code, err = check_config(config, capsys)
    assert code == 2
    # It was "not found" here while `run` read it until MemoryError.
    assert f"{tmp_path / 'mqtt.password'}: mqtt.password_file: password file is a char" in err


def test_an_oversized_password_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_site(tmp_path, {"username": "facegate", "password_file": "mqtt.password"})
    (tmp_path / "mqtt.password").write_text("x" * 5000)
    code, err = check_config(config, capsys)
    assert code == 2 and "mqtt.password_file: password file is larger than 4 KiB" in err


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("hmac.key", "mqtt.signing_key_file"),
        ("mqtt.password", "mqtt.password_file"),
        ("ca.crt", "mqtt.tls.ca_file"),
        ("enrollment.yaml", "enrollment"),
        ("facegate.yaml", None),
    ],
)
def test_a_fifo_is_refused_promptly(
    tmp_path: Path, name: str, field: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    extras: dict[str, dict[str, object]] = {
        "mqtt.password": {"username": "facegate", "password_file": "mqtt.password"},
        "ca.crt": {"tls": {"ca_file": "ca.crt"}},
    }
    config = make_site(tmp_path, extras.get(name))
    fifo = tmp_path / name
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    # It hung for over a minute before. The config itself as a FIFO: the command as a process;
    # the files it names: in-process on a thread that must answer within PROMPT_S.
    if name == "facegate.yaml":
        done = check_config_process(config)
        code, err = done.returncode, done.stderr
    else:
        code, err = check_config_on_a_thread(config, fifo, capsys)
    assert code == 2, err
    assert f"{fifo}: " in err and "is a FIFO, not a regular file" in err
    assert field is None or f"{field}: " in err
    assert "Traceback" not in err


def check_config_on_a_thread(
    config: Path, fifo: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`check_config` on a thread given PROMPT_S to answer: a hang fails the test (and a
    writer opened on the FIFO then releases the blocked reader) instead of blocking the run."""
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(main(["check-config", "--config", str(config)])),
        daemon=True,
    )
    thread.start()
    thread.join(PROMPT_S)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"check-config did not answer within {PROMPT_S} s: it blocked on {fifo}")
    assert codes, "check-config raised on its thread"
    return codes[0], capsys.readouterr().err


def test_a_tls_file_run_could_not_load_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_site(tmp_path, {"tls": {"ca_file": "ca.crt"}})
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    code, err = check_config(config, capsys)
    assert code == 2
    assert f"{tmp_path / 'ca.crt'}: mqtt.tls.ca_file: not a usable CA certificate" in err
    (tmp_path / "ca.crt").unlink()
    code, err = check_config(config, capsys)
    assert code == 2 and "mqtt.tls.ca_file: TLS file not found" in err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")
def test_tls_files_are_loaded_as_run_loads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = generate_certs(tmp_path / "certs", "localhost")
    locked: list[str | Path] = ["openssl", "pkey", "-in", certs / "facegate.key"]
    locked += ["-out", certs / "locked.key"]
    subprocess.run([*locked, "-aes256", "-passout", "pass:pw"], check=True, capture_output=True)
    tls = {"ca_file": "certs/ca.crt", "cert_file": "certs/facegate.crt"}
    config = make_site(tmp_path, {"tls": {**tls, "key_file": "certs/facegate.key"}})
    good = config.read_text()
    code, err = check_config(config, capsys)
    assert code == 0, err
    for key, problem in [("server.key", "KEY_VALUES_MISMATCH"), ("locked.key", "")]:
        config.write_text(good.replace("certs/facegate.key", f"certs/{key}"))
        # The encrypted key must not make OpenSSL prompt on the terminal: an answer, at once.
        code, err = check_config(config, capsys)
        assert code == 2 and "mqtt.tls: cannot load the client certificate and key" in err
        assert problem in err


# -- finding 11: values that passed check-config but broke run -----------------------------------


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("reconnect_max_s: .inf", "mqtt.reconnect_max_s", "finite number"),
        ("reconnect_min_s: .nan", "mqtt.reconnect_min_s", "finite number"),
        ("reconnect_min_s: 1e6, reconnect_max_s: 1e6", "mqtt.reconnect_min_s", "or equal to 60"),
        ("reconnect_max_s: 1e6", "mqtt.reconnect_max_s", "less than or equal to 3600"),
        ('topic_prefix: "face\\0gate"', "mqtt.topic_prefix", "NUL character"),
        ('topic_prefix: "face\\ngate"', "mqtt.topic_prefix", "control characters"),
        ("topic_prefix: $SYS", "mqtt.topic_prefix", "must not start with $"),
        ("topic_prefix: a//b", "mqtt.topic_prefix", "empty topic level"),
        ("topic_prefix: /facegate", "mqtt.topic_prefix", "empty topic level"),
        ("topic_prefix: facegate/", "mqtt.topic_prefix", "empty topic level"),
        ("topic_prefix: 'face+gate'", "mqtt.topic_prefix", "wildcards"),
        (f"topic_prefix: {'x' * 65}", "mqtt.topic_prefix", "1..64 bytes"),
    ],
)
def test_values_that_would_break_run_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, field: str, message: str
) -> None:
    config = with_mqtt(make_site(tmp_path), extra)
    code, err = check_config(config, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{config}:" in err and f"{field}: " in err and message in err


@pytest.mark.parametrize("prefix", ["facegate", "site-1/facegate", "büro", "a b", "x" * 64])
def test_ordinary_topic_prefixes_are_accepted(prefix: str) -> None:
    assert MqttConfig(signing_key_file=Path("k"), topic_prefix=prefix).topic_prefix == prefix


@pytest.mark.parametrize("prefix", ["a\0b", "a\x7fb", "a\x85b", "a\ufdd0", "a\U0001ffff", "\ud800"])
def test_a_prefix_a_broker_would_refuse_is_refused_in_code_too(prefix: str) -> None:
    with pytest.raises(ValidationError, match="topic_prefix"):
        MqttConfig(signing_key_file=Path("k"), topic_prefix=prefix)


# -- fuzzing: nothing but ConfigError ever escapes -----------------------------------------------

# Generated inputs per parser and run (load_config and load_enrollment each read every input;
# a mutation example mutates both real files, each read by its own parser):
# random text 5,500 + random bytes 2,000 + random structures 1,000 + mutations 1,500 = 10,000.
# Each hypothesis example draws a few inputs and a seed; a seeded generator makes the rest of
# its batch (tests/fuzzing.py: hypothesis' cost per draw was most of this file's minute).
RUNS: Final = {"text": 5_500, "bytes": 2_000, "structures": 1_000, "mutations": 1_500}
PER_PARSER: Final = 10_000
assert sum(RUNS.values()) >= PER_PARSER


def without_comments(text: str) -> str:
    # Edits inside a comment change nothing, and the parsers are slow on comments (pure-Python
    # PyYAML): mutate what they read. No value in the two files holds a "#".
    lines = (_TRAILING_COMMENT.sub("", line) for line in text.splitlines())
    return "".join(line + "\n" for line in lines if line.strip())


_TRAILING_COMMENT: Final = re.compile(r"\s*#.*$")
CONFIG_LINES: Final = without_comments(REAL_CONFIG)
ENROLLMENT_LINES: Final = without_comments(REAL_ENROLLMENT)

# Pieces of YAML syntax and values that broke something once or could.
YAML_PIECES: Final = [
    *"[]{}:,-?|>!&*'\"#%@`\\\t\n ",
    ": ", "- ", "&a ", "*a", "<<: ", "<<: *a", "? ", "---\n", "...\n", "%YAML 1.1\n",
    "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ",
    "!!python/object:os.system ", "!!str ", "!!null ", ".inf", "-.inf", ".nan", "1e999",
    "0x_", "0b_", "0o7", "1_000", "22:00", "2025-02-30", "~", "null", "yes", "$SYS", "a//b",
    "/dev/zero", "~nosuchuser/x", "\\0", "\\ud800", "\x00", "\x85", "\ufeff", "\u2028",
    "9" * 50, "[" * 80, "]" * 80,
]  # fmt: skip
pieces = st.sampled_from(YAML_PIECES) | st.text(max_size=6)
yaml_ish = st.lists(pieces, max_size=20).map("".join)
KEY_NAMES: Final = [
    "device", "cameras", "door", "source", "fps", "mqtt", "topic_prefix", "reconnect_max_s",
    "signing_key_file", "tls", "ca_file", "people", "id", "images", "doors", "schedules",
    "windows", "days", "start", "end", "timezone", "valid_until", "recognition", "threshold",
]  # fmt: skip
key_names = st.sampled_from(KEY_NAMES)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(YAML_PIECES)
    | st.dates()
    | st.datetimes()
)
structures = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(key_names | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)


def mutate(text: str, edits: list[tuple[int, int, int, str]]) -> str:
    """Apply `(kind, position, length, piece)` edits: delete, insert, replace, repeat a line."""
    for kind, position, length, piece in edits:
        at = position % (len(text) + 1)
        if kind == 0:
            text = text[:at] + text[at + length :]
        elif kind == 1:
            text = text[:at] + piece + text[at:]
        elif kind == 2:
            text = text[:at] + piece + text[at + length :]
        else:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            line = text[start : end if end >= 0 else len(text)]
            text = text[:start] + (line + "\n") * (length % 5 + 1) + text[start:]
    return text


edits = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 10**5), st.integers(0, 100), pieces),
    min_size=1,
    max_size=3,
)


def only_config_errors(path: Path, parse: Callable[[Path], object]) -> None:
    """`parse(path)` returns a model or raises a ConfigError naming the file, nothing else."""
    try:
        parse(path)
    except BadInputError as exc:  # ConfigError is one
        assert exc.source == str(path), exc


class Scratch:
    """Writes each input to a new file in `folder`, removing the previous one.

    Rewriting one file in place costs about 1 ms per input here: ext4 flushes a file that is
    truncated and written again (auto_da_alloc). A new file costs 0.04 ms."""

    def __init__(self, folder: Path, suffix: str = ".yaml") -> None:
        self._folder = folder
        self._suffix = suffix
        self._count = 0
        self._last: Path | None = None

    def write(self, data: bytes) -> Path:
        if self._last is not None:
            self._last.unlink()
        self._count += 1
        self._last = self._folder / f"{self._count}{self._suffix}"
        self._last.write_bytes(data)
        return self._last


def both_parsers(scratch: Scratch, data: bytes) -> None:
    path = scratch.write(data)
    only_config_errors(path, load_config)
    only_config_errors(path, load_enrollment)


def encoded(text: str) -> bytes:
    # surrogatepass: text with lone surrogates still becomes (invalid UTF-8) bytes on disk
    return text.encode("utf-8", "surrogatepass")


def rand_piece(rnd: random.Random) -> str:
    return rnd.choice(YAML_PIECES) if rnd.random() < 0.7 else rand_text(rnd, 6)


def test_fuzz_random_text(tmp_path: Path) -> None:
    text = st.text(max_size=200) | yaml_ish | st.text(st.characters(codec=None), max_size=50)

    def spawn(rnd: random.Random, drawn: list[str]) -> str:
        kind = rnd.randrange(4)
        if kind == 0:
            return mutate_text(rnd, rnd.choice(drawn), YAML_PIECES)
        if kind == 1:
            return "".join(rand_piece(rnd) for _ in range(rnd.randint(0, 20)))  # yaml_ish
        return rand_text(rnd, 200 if kind == 2 else 50)

    scratch = Scratch(tmp_path)
    check = lambda value: both_parsers(scratch, encoded(value))  # noqa: E731
    assert fuzz_batches(text, RUNS["text"], check, spawn) >= RUNS["text"]


def test_fuzz_random_bytes(tmp_path: Path) -> None:
    real = CONFIG_LINES.encode()

    def flip(at: int, value: int) -> bytes:
        return real[:at] + bytes([value]) + real[at + 1 :]

    flipped = st.builds(flip, st.integers(0, len(real) - 1), st.integers(0, 255))

    def spawn(rnd: random.Random, drawn: list[bytes]) -> bytes:
        kind = rnd.randrange(3)
        if kind == 0:
            return flip(rnd.randrange(len(real)), rnd.randrange(256))
        if kind == 1:
            return mutate_bytes(rnd, rnd.choice(drawn), drawn)
        return rand_bytes(rnd, 300)

    scratch = Scratch(tmp_path)
    check = partial(both_parsers, scratch)
    assert (
        fuzz_batches(st.binary(max_size=300) | flipped, RUNS["bytes"], check, spawn)
        >= RUNS["bytes"]
    )


def replace_somewhere(document: Any, choices: list[int], value: Any) -> Any:
    """A copy of `document` with the node that `choices` (a child index per level) reach
    replaced by `value`; where the choices go past a leaf, the leaf is replaced."""
    if not choices or not isinstance(document, dict | list) or not document:
        return value
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[choices[0] % len(keys)]
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[key] = replace_somewhere(document[key], choices[1:], value)
    return copy


def rand_structure(rnd: random.Random) -> Any:
    """What `structures` draws: nested lists and maps of YAML scalars, dates included."""
    value = rand_json(rnd, rnd.randint(1, 12), KEY_NAMES, surrogates=False)  # as st.text
    if rnd.random() < 0.15:
        return rnd.choice(
            [dt.date(2025, 2, 28), dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59)]
        )
    return rnd.choice(YAML_PIECES) if rnd.random() < 0.1 else value


def test_fuzz_random_structures(tmp_path: Path) -> None:
    reals = [yaml.safe_load(CONFIG_LINES), yaml.safe_load(ENROLLMENT_LINES)]
    choices = st.lists(st.integers(0, 99), min_size=1, max_size=5)
    # Real documents with one node, at any depth, replaced by a random structure.
    swaps = st.builds(replace_somewhere, st.sampled_from(reals), choices, structures)
    scratch = Scratch(tmp_path)

    def spawn(rnd: random.Random, drawn: list[tuple[Any, bool]]) -> tuple[Any, bool]:
        node = rand_structure(rnd) if rnd.random() < 0.7 else rnd.choice(drawn)[0]
        if rnd.random() < 0.5:
            where = [rnd.randrange(100) for _ in range(rnd.randint(1, 5))]
            node = replace_somewhere(rnd.choice(reals), where, node)
        return node, rnd.random() < 0.5

    def dump(document: tuple[Any, bool]) -> None:
        value, flow = document
        # libyaml's dumper: the pure-Python one would take longer than the parsers
        text = yaml.dump(value, Dumper=yaml.CSafeDumper, default_flow_style=flow)
        both_parsers(scratch, text.encode())

    strategy = st.tuples(structures | swaps, st.booleans())
    tried = fuzz_batches(strategy, RUNS["structures"], dump, spawn)
    assert tried >= RUNS["structures"]


def test_fuzz_mutations_of_the_real_files(tmp_path: Path) -> None:
    configs = Scratch(tmp_path, "-facegate.yaml")
    enrollments = Scratch(tmp_path, "-enrollment.yaml")

    def mutated(chosen: list[tuple[int, int, int, str]]) -> None:
        only_config_errors(configs.write(encoded(mutate(CONFIG_LINES, chosen))), load_config)
        enrollment = enrollments.write(encoded(mutate(ENROLLMENT_LINES, chosen)))
        only_config_errors(enrollment, load_enrollment)

    def spawn(
        rnd: random.Random, drawn: list[list[tuple[int, int, int, str]]]
    ) -> list[tuple[int, int, int, str]]:
        fresh = [
            (rnd.randrange(4), rnd.randrange(10**5 + 1), rnd.randrange(101), rand_piece(rnd))
            for _ in range(rnd.randint(1, 3))
        ]
        # now and then a drawn edit list with one more edit
        return rnd.choice(drawn) + fresh[:1] if rnd.random() < 0.2 else fresh

    assert fuzz_batches(edits, RUNS["mutations"], mutated, spawn) >= RUNS["mutations"]


def test_the_real_files_load_unmutated(tmp_path: Path) -> None:
    # The baseline the mutations start from: both example files are valid, comments or not.
    assert load_config(REPO / "config" / "facegate.yaml").device == "frontdoor-pi"
    assert load_enrollment(REPO / "config" / "enrollment.yaml").people
    (tmp_path / "facegate.yaml").write_text(CONFIG_LINES)
    (tmp_path / "enrollment.yaml").write_text(ENROLLMENT_LINES)
    assert load_config(tmp_path / "facegate.yaml").device == "frontdoor-pi"
    assert load_enrollment(tmp_path / "enrollment.yaml").people


def test_replace_somewhere_reaches_any_depth() -> None:
    document = {"a": 1, "b": {"c": [10, 20]}}
    assert replace_somewhere(document, [1, 0, 1], "x") == {"a": 1, "b": {"c": [10, "x"]}}
    assert replace_somewhere(document, [0, 5, 5], "x") == {"a": "x", "b": {"c": [10, 20]}}
    assert document == {"a": 1, "b": {"c": [10, 20]}}  # a copy: the original is kept


def test_mutate_applies_each_kind_of_edit() -> None:
    base = "a: 1\nb: 2\n"
    assert mutate(base, [(0, 0, 5, "")]) == "b: 2\n"
    assert mutate(base, [(1, 5, 0, "x: [")]) == "a: 1\nx: [b: 2\n"
    assert mutate(base, [(2, 3, 1, "9")]) == "a: 9\nb: 2\n"
    assert mutate(base, [(3, 6, 1, "")]) == "a: 1\nb: 2\nb: 2\nb: 2\n"


# --- found after the first pass -----------------------------------------------------------


def test_a_glob_over_the_whole_filesystem_is_refused_quickly(tmp_path: Path) -> None:
    enrollment = tmp_path / "enrollment.yaml"
    enrollment.write_text("people:\n  - {id: x, images: ['/**/*'], doors: [front]}\n")
    started = time.monotonic()
    with pytest.raises(BadInputError, match="matches more than"):
        load_enrollment(enrollment).images_for(load_enrollment(enrollment).people[0])
    assert time.monotonic() - started < 30  # a bound on the walk, not a speed test


def test_run_refuses_a_fifo_as_tls_file_instead_of_hanging(tmp_path: Path) -> None:
    from facegate.mqtt.client import _base_client

    fifo = tmp_path / "ca.crt"
    os.mkfifo(fifo)
    config = MqttConfig.model_validate({"signing_key_file": "k", "tls": {"ca_file": str(fifo)}})
    with pytest.raises(BadInputError, match="mqtt.tls.ca_file"):
        _base_client(config, "test")
