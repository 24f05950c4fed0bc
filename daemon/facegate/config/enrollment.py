"""`enrollment.yaml`: who may open which door, when, and from which images they are enrolled.

Time rules (also in the example file):
- A schedule window is wall-clock time in the schedule's IANA timezone, so it follows DST:
  on the spring-forward day a 01:00-04:00 window lasts two real hours, and a window inside
  the skipped hour never opens; in the repeated autumn hour it is open both times.
- `start` < `end` is a same-day window, `end` may be "24:00". `start` > `end` (22:00-06:00)
  is an overnight window: it opens on each listed day and closes on the next morning.
  `start` == `end` is refused as ambiguous (empty or all day?).
- `valid_from` / `valid_until` may be dates or datetimes. Naive ones are wall time in the
  person's schedule timezone, or in the file's top-level `timezone` (default UTC) for a
  person without a schedule. A date for `valid_from` starts at 00:00 of that day; a date
  for `valid_until` includes that whole day; a datetime `valid_until` is the first
  instant no longer valid.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from facegate.config.loader import (
    LineMap,
    anchor_path,
    located_error,
    nearest_line,
    require_unique,
)
from facegate.errors import BadInputError
from facegate.files import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: Final[tuple[Day, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_GROUPS: Final[dict[str, tuple[Day, ...]]] = {
    "weekdays": DAYS[:5],
    "weekends": DAYS[5:],
    "daily": DAYS,
}
ALL_DOORS: Final = "*"
MINUTES_PER_DAY: Final = 24 * 60

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,64}$")]
ScheduleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
DoorRef = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z0-9_-]{1,32})$")]

_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
_GLOB_MAGIC = re.compile(r"[*?[]")


def _zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or ValueError (unknown names and path tricks alike)."""
    try:
        return ZoneInfo(name)
    # OSError: a name that is a folder of the zone database (`America`) or far too long.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown IANA timezone {name!r} (e.g. Europe/Berlin, UTC)") from None


def _require_aware(when: datetime) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("`when` must be timezone-aware")


def _minutes(raw: object, *, allow_24: bool) -> int:
    """`"HH:MM"` -> minutes after midnight; `"24:00"` only where `allow_24`."""
    match = _HHMM.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise ValueError('expected a quoted time "HH:MM", e.g. "08:30"')
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise ValueError(
            'time out of range: "00:00".."23:59"' + (' or "24:00"' if allow_24 else "")
        )
    return hours * 60 + minutes


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class TimeWindow(BaseModel):
    """Open from `start` to `end` (wall time) on `days`; overnight if `start` > `end`."""

    model_config = _FROZEN

    days: tuple[Day, ...] = Field(
        min_length=1,
        description='mon..sun, or "weekdays" / "weekends" / "daily"; overnight windows count '
        "from the day they open",
    )
    start: int = Field(description='opening time "HH:MM" (stored as minutes after midnight)')
    end: int = Field(description='closing time "HH:MM" or "24:00" (minutes after midnight)')

    @field_validator("days", mode="before")
    @classmethod
    def _expand_days(cls, raw: object) -> object:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple):
            return raw
        expanded: list[object] = []
        for item in items:
            key = item.lower() if isinstance(item, str) else item
            group = DAY_GROUPS.get(key) if isinstance(key, str) else None
            expanded.extend(group if group else [key])
        if not all(isinstance(day, str) for day in expanded):
            return expanded  # a list or mapping among the days: pydantic names it (unhashable)
        return tuple(dict.fromkeys(expanded))  # duplicates are harmless: drop them

    @field_validator("start", mode="before")
    @classmethod
    def _parse_start(cls, raw: object) -> int:
        return _minutes(raw, allow_24=False)

    @field_validator("end", mode="before")
    @classmethod
    def _parse_end(cls, raw: object) -> int:
        return _minutes(raw, allow_24=True)

    @field_validator("end")
    @classmethod
    def _not_empty(cls, end: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        if start is not None and start == end % MINUTES_PER_DAY:
            raise ValueError(f"end equals start ({_hhmm(start)}): empty or all day is ambiguous")
        return end

    @property
    def overnight(self) -> bool:
        return self.start > self.end

    def contains(self, local: datetime) -> bool:
        """Whether naive-or-aware local wall time `local` falls in this window."""
        now = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 6e7
        today = DAYS[local.weekday()]
        if not self.overnight:
            return today in self.days and self.start <= now < self.end
        yesterday = DAYS[(local.weekday() - 1) % 7]
        return (today in self.days and now >= self.start) or (
            yesterday in self.days and now < self.end
        )


class Schedule(BaseModel):
    """Named weekly opening hours in one timezone."""

    model_config = _FROZEN

    timezone: str = Field(default="UTC", description="IANA timezone, e.g. Europe/Berlin")
    windows: list[TimeWindow] = Field(min_length=1, description="open while any window is")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        _zone(name)
        return name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances: cheap

    def is_open(self, when: datetime) -> bool:
        """Whether the tz-aware instant `when` is inside a window (in this zone's wall time)."""
        _require_aware(when)
        local = when.astimezone(self.zone)
        return any(window.contains(local) for window in self.windows)


def _instant(value: date | datetime, zone: tzinfo, *, end: bool) -> datetime:
    """A validity bound as an aware instant (see the module docstring for the rules)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    day = value + timedelta(days=1) if end else value
    return datetime.combine(day, time(0), tzinfo=zone)


def _parse_when(raw: object) -> object:
    """A date or datetime from YAML (already typed) or a quoted ISO string."""
    if raw is None or isinstance(raw, date):
        return raw
    if not isinstance(raw, str):
        raise ValueError("expected a date YYYY-MM-DD or datetime YYYY-MM-DDTHH:MM[+HH:MM]")
    try:
        return date.fromisoformat(raw) if len(raw) == 10 else datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"bad date or datetime: {exc}") from None


class Enrollee(BaseModel):
    """Someone the gallery holds: an id, a display name and the photos to enroll from."""

    model_config = _FROZEN

    id: Slug = Field(description="unique id in events and unlocks: [a-z0-9_-], 1..64 chars")
    name: str = Field(default="", description="display name; defaults to the id")
    images: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        min_length=1,
        description="image files, globs or folders (jpg, png, webp, ...), relative to the YAML",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and not raw.get("name") and isinstance(raw.get("id"), str):
            return {**raw, "name": raw["id"]}
        return raw

    @field_validator("images", mode="before")
    @classmethod
    def _images_a_list(cls, raw: object) -> object:
        return [raw] if isinstance(raw, str) else raw


class BlockedPerson(Enrollee):
    """Someone who must never be let in, e.g. a frequent visitor who resembles a resident.

    Enrolled and matched like everyone else, so a face nearer to them than to the resident
    (or too close to both: the margin rule) is never taken for the resident; when they are
    recognised the door answers `denied` with code `blocked`, naming them."""


class Person(Enrollee):
    """One enrolled resident."""

    doors: list[DoorRef] = Field(
        min_length=1, description='door ids this person may open, or "*" for every door'
    )
    schedule: ScheduleName | None = Field(
        default=None, description="name of a schedule; none means at any time"
    )
    valid_from: date | datetime | None = Field(
        default=None, description="first day/instant of access; naive = schedule tz or UTC"
    )
    valid_until: date | datetime | None = Field(
        default=None, description="last day (inclusive) or first instant without access"
    )
    disabled: bool = Field(default=False, description="true: never granted, kept in the file")

    # Zone for naive validity bounds; set by EnrollmentConfig from the schedule or file.
    _zone: tzinfo = PrivateAttr(default=UTC)

    @field_validator("doors", mode="before")
    @classmethod
    def _doors_a_list(cls, raw: object) -> object:
        return [raw] if isinstance(raw, str) else raw

    @field_validator("doors")
    @classmethod
    def _star_alone(cls, doors: list[str]) -> list[str]:
        if ALL_DOORS in doors and len(doors) > 1:
            raise ValueError('"*" already means every door: give it alone')
        return doors

    @field_validator("valid_from", "valid_until", mode="before")
    @classmethod
    def _parse_bound(cls, raw: object) -> object:
        return _parse_when(raw)

    def bind_zone(self, zone: tzinfo) -> None:
        """Set the zone naive validity bounds are read in (EnrollmentConfig does this)."""
        self._zone = zone

    @property
    def starts_at(self) -> datetime | None:
        """The first aware instant of access, or None."""
        return None if self.valid_from is None else _instant(self.valid_from, self._zone, end=False)

    @property
    def ends_at(self) -> datetime | None:
        """The first aware instant without access, or None."""
        return (
            None if self.valid_until is None else _instant(self.valid_until, self._zone, end=True)
        )

    def validity_problem(self, when: datetime) -> str | None:
        """Why this person is not valid at aware `when` (a denial reason), or None."""
        _require_aware(when)
        if self.disabled:
            return "disabled"
        starts, ends = self.starts_at, self.ends_at
        if starts is not None and when < starts:
            return f"not valid before {starts.isoformat()}"
        if ends is not None and when >= ends:
            return f"expired at {ends.isoformat()}"
        return None

    def is_valid_at(self, when: datetime) -> bool:
        """Enabled and inside valid_from..valid_until at the tz-aware instant `when`."""
        return self.validity_problem(when) is None

    def may_use(self, door: str) -> bool:
        """Whether this person's doors include `door` (or are "*")."""
        return ALL_DOORS in self.doors or door in self.doors


class EnrollmentConfig(BaseModel):
    """The whole of enrollment.yaml."""

    model_config = _FROZEN

    timezone: str = Field(
        default="UTC",
        description="IANA zone for naive valid_from/valid_until of people without a schedule",
    )
    schedules: dict[ScheduleName, Schedule] = Field(
        default_factory=dict, description="name -> weekly opening hours"
    )
    people: list[Person] = Field(default_factory=list, description="enrolled residents")
    blocked: list[BlockedPerson] = Field(
        default_factory=list,
        description="people never let in; matched like residents, so a lookalike of a"
        " resident is told apart (and denied, named) instead of taken for them",
    )

    _source: Path | None = PrivateAttr(default=None)
    _lines: LineMap = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, raw: Any) -> Any:
        # `people:` with nothing under it reads as None: an empty list is what was meant.
        if isinstance(raw, dict):
            empty: dict[str, Any] = {"people": [], "schedules": {}, "blocked": []}
            return {
                key: empty[key] if value is None and key in empty else value
                for key, value in raw.items()
            }
        return raw

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        _zone(name)
        return name

    @field_validator("people")
    @classmethod
    def _unique_ids(cls, people: list[Person]) -> list[Person]:
        ids = [person.id for person in people]
        require_unique(ids, "id", lambda first: f"duplicate person id (also people[{first}])")
        return people

    @field_validator("blocked")
    @classmethod
    def _unique_blocked_ids(cls, blocked: list[BlockedPerson]) -> list[BlockedPerson]:
        ids = [entry.id for entry in blocked]
        require_unique(ids, "id", lambda first: f"duplicate blocked id (also blocked[{first}])")
        return blocked

    @model_validator(mode="after")
    def _cross_check(self) -> EnrollmentConfig:
        residents = {person.id: index for index, person in enumerate(self.people)}
        for index, entry in enumerate(self.blocked):
            if entry.id in residents:
                raise located_error(
                    ("blocked", index, "id"),
                    f"also a resident (people[{residents[entry.id]}]): one or the other",
                    entry.id,
                )
        default_zone = ZoneInfo(self.timezone)
        for index, person in enumerate(self.people):
            schedule = self._schedule_of(index, person)
            person.bind_zone(schedule.zone if schedule else default_zone)
            starts, ends = person.starts_at, person.ends_at
            if starts is not None and ends is not None and ends <= starts:
                raise located_error(
                    ("people", index, "valid_until"),
                    f"valid_until must be after valid_from ({person.valid_from})",
                    person.valid_until,
                )
        return self

    def _schedule_of(self, index: int, person: Person) -> Schedule | None:
        if person.schedule is None:
            return None
        if person.schedule not in self.schedules:
            known = ", ".join(sorted(self.schedules)) or "none defined"
            raise located_error(
                ("people", index, "schedule"),
                f"unknown schedule (known: {known})",
                person.schedule,
            )
        return self.schedules[person.schedule]

    def bind_source(self, source: Path, lines: LineMap) -> None:
        """Remember the file this came from, so image errors can name file and line."""
        self._source = source
        self._lines = lines

    @property
    def source(self) -> Path | None:
        """The YAML file this was loaded from (None if built in code)."""
        return self._source

    def person(self, person_id: str) -> Person | None:
        """The resident with `person_id`, or None (blocked people are not residents)."""
        return next((p for p in self.people if p.id == person_id), None)

    def is_blocked(self, person_id: str) -> bool:
        """Whether `person_id` is listed under `blocked`: never let in."""
        return any(entry.id == person_id for entry in self.blocked)

    @property
    def enrollees(self) -> list[Enrollee]:
        """Everyone the gallery holds: the residents, then the blocked."""
        return [*self.people, *self.blocked]

    def schedule_for(self, person: Person) -> Schedule | None:
        """The person's schedule; None means no time restriction."""
        return None if person.schedule is None else self.schedules[person.schedule]

    def images_for(self, person: Enrollee) -> list[Path]:
        """`resolve_images` for one of this file's people (residents or blocked), errors
        naming file and line."""
        section, index = self.location(person)
        source = self._source
        base_dir = source.absolute().parent if source else Path.cwd()
        line = nearest_line(self._lines, (section, index, "images")) if self._lines else None
        return resolve_images(
            person, base_dir, source=source, field=f"{section}[{index}].images", line=line
        )

    def location(self, person: Enrollee) -> tuple[str, int]:
        """("people" or "blocked", index) of an entry of this file."""
        if isinstance(person, BlockedPerson):
            return "blocked", self.blocked.index(person)
        assert isinstance(person, Person)
        return "people", self.people.index(person)


#: Paths one `images` glob may match (a person needs 3-10 photos; this bounds a typo).
MAX_GLOB_MATCHES: Final = 10_000


def _image_files(folder: Path) -> list[Path]:
    # Hidden files include macOS "._x.jpg" resource forks, which are not images.
    return [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]


def _expand(entry: str, base_dir: Path) -> tuple[list[Path], str]:
    """The image files one `images` entry names, and why there are none if so."""
    if _GLOB_MAGIC.search(entry):
        # os.path.expanduser leaves `~nosuchuser` as it is; Path.expanduser raises.
        pattern = str(Path(os.path.expanduser(entry)))
        found: list[Path] = []
        # Lazily, and bounded: `/**/*` would otherwise list the whole filesystem.
        matches = glob.iglob(pattern, root_dir=base_dir, recursive=True)
        for count, match in enumerate(matches):
            if count >= MAX_GLOB_MATCHES:
                return [], f"pattern matches more than {MAX_GLOB_MATCHES} paths; name a folder"
            path = anchor_path(Path(match), base_dir)
            found.extend(_image_files(path) if path.is_dir() else [path])
        images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        return images, "pattern matches no image files"
    path = anchor_path(Path(entry), base_dir)
    if path.is_dir():
        return _image_files(path), f"folder {path} holds no image files"
    if not path.is_file():
        return [], f"no such file or folder: {path}"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return [], f"not an image file name: {path}"
    return [path], ""


def resolve_images(
    person: Enrollee,
    base_dir: Path,
    *,
    source: str | Path | None = None,
    field: str | None = None,
    line: int | None = None,
) -> list[Path]:
    """The sorted, de-duplicated image files of `person` (globs and folders expanded).

    Relative entries are relative to `base_dir` (the enrollment file's folder). An entry
    that yields no image is a BadInputError naming `source` (default `base_dir`) and
    `field` (default `people[id=<id>].images`). Extensions: facegate.files.IMAGE_SUFFIXES.
    """
    files: set[Path] = set()
    for entry in person.images:
        images, why = _expand(entry, base_dir)
        if not images:
            raise BadInputError(
                source if source is not None else base_dir,
                f"{why} (got {entry!r}; extensions: {', '.join(sorted(IMAGE_SUFFIXES))})",
                field=field or f"people[id={person.id}].images",
                line=line,
            )
        files.update(images)
    logger.debug("person %s: %d image files", person.id, len(files))
    return sorted(files)


def door_ids(people: Iterable[Person]) -> set[str]:
    """Every explicit door id the people refer to ("*" excluded), for check-config."""
    return {door for person in people for door in person.doors if door != ALL_DOORS}
