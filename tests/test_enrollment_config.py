"""enrollment.yaml: one invalid variant per rule, schedules (DST, overnight), validity, images."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from facegate.config import (
    EnrollmentConfig,
    Person,
    Schedule,
    load_enrollment,
    resolve_images,
)
from facegate.errors import BadInputError, ConfigError

REPO = Path(__file__).resolve().parents[1]
BERLIN = ZoneInfo("Europe/Berlin")

BASE = """\
timezone: UTC
schedules:
  office:
    timezone: Europe/Berlin
    windows:
      - days: weekdays
        start: "08:00"
        end: "18:00"
people:
  - id: alice
    name: Alice
    images: [alice/]
    doors: [front]
    schedule: office
    valid_from: 2025-01-01
    valid_until: 2025-12-31
  - id: bob
    images: [bob.jpg]
    doors: ["*"]
"""

# (id, old text, new text, line, key path, message fragment)
INVALID = [
    (
        "unknown-top-key",
        "timezone: UTC\n",
        "timezone: UTC\ncolour: red\n",
        2,
        "colour",
        "unknown key (got 'red')",
    ),
    (
        "unknown-person-key",
        '    doors: ["*"]\n',
        '    doors: ["*"]\n    role: admin\n',
        20,
        "people[1].role",
        "unknown key",
    ),
    (
        "unknown-window-key",
        '        end: "18:00"\n',
        '        end: "18:00"\n        open: 1\n',
        9,
        "schedules.office.windows[0].open",
        "unknown key",
    ),
    (
        "duplicate-id",
        "  - id: bob",
        "  - id: alice",
        17,
        "people[1].id",
        "duplicate person id (also people[0]) (got 'alice')",
    ),
    ("id-slug", "  - id: bob", "  - id: Bob Smith", 17, "people[1].id", "'Bob Smith'"),
    (
        "id-missing",
        "  - id: bob\n    images",
        "  - images",
        17,
        "people[1].id",
        "required key is missing",
    ),
    (
        "unknown-schedule",
        "schedule: office",
        "schedule: night",
        14,
        "people[0].schedule",
        "unknown schedule (known: office) (got 'night')",
    ),
    (
        "bad-date-string",
        "valid_from: 2025-01-01",
        'valid_from: "2025-13-01"',
        15,
        "people[0].valid_from",
        "bad date",
    ),
    (
        "bad-date-yaml",
        "valid_from: 2025-01-01",
        "valid_from: 2025-02-30",
        15,
        "people[0].valid_from",
        "invalid date",
    ),
    (
        "date-type",
        "valid_from: 2025-01-01",
        "valid_from: 5",
        15,
        "people[0].valid_from",
        "expected a date",
    ),
    (
        "until-before-from",
        "valid_until: 2025-12-31",
        "valid_until: 2024-12-31",
        16,
        "people[0].valid_until",
        "valid_until must be after valid_from",
    ),
    (
        "until-equals-from",
        "valid_until: 2025-12-31",
        'valid_until: "2025-01-01T00:00"',
        16,
        "people[0].valid_until",
        "must be after",
    ),
    (
        "schedule-timezone",
        "timezone: Europe/Berlin",
        "timezone: Mars/Olympus",
        4,
        "schedules.office.timezone",
        "unknown IANA timezone 'Mars/Olympus'",
    ),
    (
        "timezone-path-trick",
        "timezone: Europe/Berlin",
        "timezone: ../../etc/passwd",
        4,
        "schedules.office.timezone",
        "unknown IANA timezone",
    ),
    ("top-timezone", "timezone: UTC", "timezone: Nowhere", 1, "timezone", "unknown IANA"),
    ("images-empty", "images: [bob.jpg]", "images: []", 18, "people[1].images", "at least 1"),
    (
        "images-blank",
        "images: [bob.jpg]",
        'images: [""]',
        18,
        "people[1].images[0]",
        "at least 1 character",
    ),
    ("doors-empty", 'doors: ["*"]', "doors: []", 19, "people[1].doors", "at least 1"),
    (
        "doors-star-and-more",
        'doors: ["*"]',
        'doors: ["*", front]',
        19,
        "people[1].doors",
        '"*" already means every door',
    ),
    ("door-id", "doors: [front]", "doors: [Front]", 13, "people[0].doors[0]", "'Front'"),
    (
        "disabled-type",
        '    doors: ["*"]\n',
        '    doors: ["*"]\n    disabled: maybe\n',
        20,
        "people[1].disabled",
        "valid boolean",
    ),
    (
        "day",
        "days: weekdays",
        "days: [mon, funday]",
        6,
        "schedules.office.windows[0].days[1]",
        "'funday'",
    ),
    (
        "days-empty",
        "days: weekdays",
        "days: []",
        6,
        "schedules.office.windows[0].days",
        "at least 1",
    ),
    (
        "time-format",
        'start: "08:00"',
        'start: "8am"',
        7,
        "schedules.office.windows[0].start",
        '"HH:MM"',
    ),
    (
        "time-not-string",
        'start: "08:00"',
        "start: 8",
        7,
        "schedules.office.windows[0].start",
        '"HH:MM"',
    ),
    (
        "time-range",
        'end: "18:00"',
        'end: "24:30"',
        8,
        "schedules.office.windows[0].end",
        "out of range",
    ),
    (
        "minutes-range",
        'end: "18:00"',
        'end: "18:60"',
        8,
        "schedules.office.windows[0].end",
        "out of range",
    ),
    (
        "start-24",
        'start: "08:00"',
        'start: "24:00"',
        7,
        "schedules.office.windows[0].start",
        "out of range",
    ),
    (
        "start-equals-end",
        'end: "18:00"',
        'end: "08:00"',
        8,
        "schedules.office.windows[0].end",
        "end equals start",
    ),
    (
        "windows-empty",
        '    windows:\n      - days: weekdays\n        start: "08:00"\n        end: "18:00"\n',
        "    windows: []\n",
        5,
        "schedules.office.windows",
        "at least 1",
    ),
    ("schedule-name", "  office:", "  off ice:", 3, "schedules.off ice", "should match pattern"),
    ("people-type", "people:\n", "people: 3\nnot_people:\n", 9, "people", "valid list"),
    (
        "duplicate-yaml-key",
        "    name: Alice\n",
        "    name: Alice\n    name: Alicia\n",
        12,
        "people[0].name",
        "duplicate key 'name' (first given on line 11)",
    ),
]


def write(folder: Path, text: str) -> Path:
    path = folder / "enrollment.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "fragment"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_variant(
    tmp_path: Path, old: str, new: str, line: int, key: str, fragment: str
) -> None:
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_enrollment(path)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"{path}:{line}: {key}: "), first
    assert fragment in first


def test_base_and_forgiving_forms(tmp_path: Path) -> None:
    text = BASE.replace('start: "08:00"', "start: 8:00").replace('doors: ["*"]', "doors: '*'")
    text = text.replace("images: [bob.jpg]", "images: bob.jpg").replace(
        "days: weekdays", "days: [Weekends, mon, mon]"
    )
    config = load_enrollment(write(tmp_path, text))
    alice, bob = config.people
    assert alice.name == "Alice" and bob.name == "bob"  # the name defaults to the id
    assert bob.doors == ["*"] and bob.images == ["bob.jpg"]
    window = config.schedules["office"].windows[0]
    assert window.days == ("sat", "sun", "mon")
    assert window.start == 8 * 60  # unquoted 8:00 is not the YAML 1.1 number 480
    assert config.schedule_for(alice) is config.schedules["office"]
    assert config.schedule_for(bob) is None
    assert config.person("bob") is bob and config.person("carol") is None


def test_empty_sections(tmp_path: Path) -> None:
    config = load_enrollment(write(tmp_path, "people:\nschedules:\n"))
    assert config.people == [] and config.schedules == {}


def test_example_enrollment_validates() -> None:
    config = load_enrollment(REPO / "config" / "enrollment.yaml")
    assert [p.id for p in config.people] == [
        "ben_afflek",
        "elton_john",
        "jerry_seinfeld",
        "madonna",
    ]
    assert config.source == REPO / "config" / "enrollment.yaml"


@pytest.mark.skipif(
    not (REPO / "models/data/5-celebrity/train/madonna").is_dir(), reason="needs `make models`"
)
def test_example_images_exist() -> None:
    config = load_enrollment(REPO / "config" / "enrollment.yaml")
    for person in config.people:
        assert config.images_for(person), person.id


# --- schedules -----------------------------------------------------------------------


def schedule(days: object, start: str, end: str, tz: str = "Europe/Berlin") -> Schedule:
    return Schedule.model_validate(
        {"timezone": tz, "windows": [{"days": days, "start": start, "end": end}]}
    )


def berlin(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("when", "is_open"),
    [
        (berlin(2025, 3, 24, 8, 0), True),  # Monday, start is inclusive
        (berlin(2025, 3, 24, 7, 59, 59), False),
        (berlin(2025, 3, 28, 17, 59, 59), True),  # Friday
        (berlin(2025, 3, 28, 18, 0), False),  # end is exclusive
        (berlin(2025, 3, 29, 10, 0), False),  # Saturday
        (berlin(2025, 3, 30, 10, 0), False),  # Sunday
    ],
)
def test_weekdays(when: datetime, is_open: bool) -> None:
    assert schedule("weekdays", "08:00", "18:00").is_open(when) is is_open


@pytest.mark.parametrize(
    ("when", "is_open"),
    [
        (berlin(2025, 3, 28, 21, 59), False),  # Friday before opening
        (berlin(2025, 3, 28, 23, 0), True),  # Friday night
        (berlin(2025, 3, 29, 5, 59), True),  # Saturday morning, still Friday's window
        (berlin(2025, 3, 29, 6, 0), False),
        (berlin(2025, 3, 29, 23, 0), False),  # Saturday night: Saturday is not listed
        (berlin(2025, 3, 28, 3, 0), False),  # Friday morning belongs to Thursday
    ],
)
def test_overnight(when: datetime, is_open: bool) -> None:
    assert schedule(["fri"], "22:00", "06:00").is_open(when) is is_open


def test_until_midnight() -> None:
    evening = schedule(["mon"], "20:00", "24:00")
    assert evening.is_open(berlin(2025, 3, 24, 23, 59, 59))
    assert not evening.is_open(berlin(2025, 3, 25, 0, 0))
    assert not evening.windows[0].overnight


def test_dst_spring_forward_berlin() -> None:
    # 2025-03-30: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    morning = schedule("daily", "08:00", "09:00")
    assert morning.is_open(datetime(2025, 3, 30, 6, 30, tzinfo=UTC))  # 08:30 CEST
    assert not morning.is_open(datetime(2025, 3, 29, 6, 30, tzinfo=UTC))  # 07:30 CET
    assert morning.is_open(datetime(2025, 3, 29, 7, 30, tzinfo=UTC))  # 08:30 CET
    skipped = schedule("daily", "02:00", "02:30")
    minutes = (datetime(2025, 3, 29, 23, 0, tzinfo=UTC) + timedelta(minutes=m) for m in range(240))
    assert not any(skipped.is_open(when) for when in minutes)
    assert skipped.is_open(datetime(2025, 3, 29, 1, 15, tzinfo=UTC))  # 02:15 CET the day before


def test_dst_fall_back_berlin_repeated_hour_is_open_twice() -> None:
    # 2025-10-26: 03:00 CEST falls back to 02:00 CET (01:00 UTC).
    window = schedule("sun", "02:00", "02:30")
    assert window.is_open(datetime(2025, 10, 26, 0, 15, tzinfo=UTC))  # 02:15 CEST
    assert window.is_open(datetime(2025, 10, 26, 1, 15, tzinfo=UTC))  # 02:15 CET
    assert not window.is_open(datetime(2025, 10, 26, 1, 45, tzinfo=UTC))  # 02:45 CET


def test_is_open_converts_the_zone_and_refuses_naive() -> None:
    office = schedule("weekdays", "08:00", "18:00")
    new_york = datetime(2025, 3, 24, 3, 30, tzinfo=ZoneInfo("America/New_York"))  # 08:30 CET
    assert office.is_open(new_york)
    with pytest.raises(ValueError, match="timezone-aware"):
        office.is_open(datetime(2025, 3, 24, 9, 0))


# --- validity and doors --------------------------------------------------------------


def test_date_bounds_use_the_schedule_zone(tmp_path: Path) -> None:
    alice = load_enrollment(write(tmp_path, BASE)).people[0]
    assert not alice.is_valid_at(datetime(2024, 12, 31, 22, 59, tzinfo=UTC))  # 23:59 Berlin
    assert alice.is_valid_at(datetime(2024, 12, 31, 23, 0, tzinfo=UTC))  # 00:00 Berlin
    assert alice.is_valid_at(datetime(2025, 12, 31, 22, 59, tzinfo=UTC))  # last day included
    assert not alice.is_valid_at(datetime(2025, 12, 31, 23, 0, tzinfo=UTC))
    assert alice.validity_problem(datetime(2026, 1, 5, tzinfo=UTC)) == (
        "expired at 2026-01-01T00:00:00+01:00"
    )


def test_naive_bounds_without_schedule_use_the_file_zone(tmp_path: Path) -> None:
    text = BASE.replace("timezone: UTC", "timezone: America/New_York").replace(
        '    doors: ["*"]\n', '    doors: ["*"]\n    valid_until: 2025-06-01T12:00:00\n'
    )
    bob = load_enrollment(write(tmp_path, text)).people[1]
    assert bob.ends_at == datetime(2025, 6, 1, 16, 0, tzinfo=UTC)  # EDT is UTC-4
    assert bob.is_valid_at(datetime(2025, 6, 1, 15, 59, tzinfo=UTC))
    assert not bob.is_valid_at(datetime(2025, 6, 1, 16, 0, tzinfo=UTC))


def test_aware_bounds_are_taken_as_given(tmp_path: Path) -> None:
    text = BASE.replace("valid_from: 2025-01-01", "valid_from: 2025-01-01T10:00:00+05:00")
    alice = load_enrollment(write(tmp_path, text)).people[0]
    assert alice.starts_at == datetime(2025, 1, 1, 5, 0, tzinfo=UTC)
    assert alice.validity_problem(datetime(2025, 1, 1, 4, 0, tzinfo=UTC)) is not None


def test_disabled_and_unbounded() -> None:
    person = Person(id="p", images=["x.jpg"], doors=["front", "back"])
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert person.is_valid_at(when)
    disabled = person.model_copy(update={"disabled": True})
    assert not disabled.is_valid_at(when)
    assert disabled.validity_problem(when) == "disabled"
    with pytest.raises(ValueError, match="timezone-aware"):
        person.is_valid_at(datetime(2030, 1, 1))


def test_may_use() -> None:
    person = Person(id="p", images=["x.jpg"], doors=["front", "back"])
    everywhere = Person(id="q", images=["x.jpg"], doors=["*"])
    assert person.may_use("front") and person.may_use("back")
    assert not person.may_use("garage")
    assert everywhere.may_use("garage")


def test_date_only_valid_from_in_code() -> None:
    person = Person(id="p", images=["x"], doors=["*"], valid_from=date(2025, 1, 1))
    assert person.starts_at == datetime(2025, 1, 1, tzinfo=UTC)


# --- images --------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    for name in [
        "alice/a.jpg",
        "alice/b.PNG",
        "alice/notes.txt",
        "alice/._a.jpg",
        "alice/sub/c.webp",
        "bob.jpg",
        "readme.md",
        "empty/x.txt",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path


def person_with(images: list[str]) -> Person:
    return Person(id="p", images=images, doors=["*"])


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (["alice/"], ["alice/a.jpg", "alice/b.PNG"]),
        (["alice"], ["alice/a.jpg", "alice/b.PNG"]),
        (["bob.jpg", "alice/a.jpg"], ["alice/a.jpg", "bob.jpg"]),
        (["alice/*.jpg"], ["alice/a.jpg"]),
        (["alice/**/*"], ["alice/a.jpg", "alice/b.PNG", "alice/sub/c.webp"]),
        (["*"], ["alice/a.jpg", "alice/b.PNG", "bob.jpg"]),  # folders matched are expanded
        (["alice/", "alice/a.jpg"], ["alice/a.jpg", "alice/b.PNG"]),  # no duplicates
    ],
)
def test_resolve_images(photos: Path, images: list[str], expected: list[str]) -> None:
    assert resolve_images(person_with(images), photos) == [photos / e for e in expected]


def test_resolve_images_absolute_and_home(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(photos))
    other = tmp_path / "elsewhere"
    other.mkdir()
    images = [str(photos / "bob.jpg"), "~/alice/*.jpg"]
    assert resolve_images(person_with(images), other) == [
        photos / "alice/a.jpg",
        photos / "bob.jpg",
    ]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("carol.jpg", "no such file or folder"),
        ("carol/*.jpg", "pattern matches no image files"),
        ("alice/*.txt", "pattern matches no image files"),
        ("empty/", "holds no image files"),
        ("readme.md", "not an image file name"),
    ],
)
def test_resolve_images_errors_name_file_field_and_line(photos: Path, entry: str, why: str) -> None:
    text = BASE.replace("images: [bob.jpg]", f"images: [bob.jpg, '{entry}']")
    config = load_enrollment(write(photos, text))
    with pytest.raises(BadInputError) as info:
        config.images_for(config.people[1])
    message = str(info.value)
    assert message.startswith(f"{photos / 'enrollment.yaml'}:18: people[1].images: "), message
    assert why in message and entry in message


def test_resolve_images_default_error_names_the_person(photos: Path) -> None:
    with pytest.raises(BadInputError, match=r"people\[id=p\]\.images: no such file"):
        resolve_images(person_with(["nobody.jpg"]), photos)


def test_enrollment_is_frozen(tmp_path: Path) -> None:
    config = load_enrollment(write(tmp_path, BASE))
    with pytest.raises(ValueError, match="frozen"):
        config.people[0].disabled = True
    assert isinstance(config, EnrollmentConfig)
