"""`facegate ...`: the one place that parses argv, prints, and picks exit codes.

Exit codes: 0 ok / match, 1 rejected / no match / unknown, 2 bad input or config.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facegate.errors import BadInputError, FacegateError, GalleryError, ModelError

if TYPE_CHECKING:
    from facegate.enroll import EnrollReport
    from facegate.matching import Matcher, MatchResult
    from facegate.vision.engine import EmbedderKind, FaceEngine

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_BAD_INPUT = 2
DEFAULT_CONFIG = Path("/etc/facegate/facegate.yaml")

Handler = Callable[[argparse.Namespace], int]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# --- subcommands -----------------------------------------------------------------------------
# Each subcommand is a pair: _add_<name>(subparsers) declares its arguments and sets `handler`.


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegate", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, help="folder built by `make models`")
    parser.add_argument(
        "--model", choices=("int8", "float"), default="int8", help="embedder (default int8)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference")
    parser.add_argument("--json", action="store_true", help="print a JSON object")


def _add_match_args(parser: argparse.ArgumentParser) -> None:
    refs = parser.add_mutually_exclusive_group(required=True)
    refs.add_argument("--refs", type=Path, help="folder of <id>.<ext> images or <id>/ folders")
    refs.add_argument("--gallery", type=Path, help="gallery file written by `facegate enroll`")
    parser.add_argument(
        "--threshold", type=float, default=0.9, help="max L2 distance to accept (default 0.9)"
    )
    _add_engine_args(parser)


def _load_engine(args: argparse.Namespace) -> FaceEngine:
    from facegate.vision.engine import FaceEngine, default_models_dir

    kind: EmbedderKind = "float32" if args.model == "float" else "int8"
    return FaceEngine.load(args.models or default_models_dir(), kind, args.threads)


def _load_matcher(args: argparse.Namespace, engine: FaceEngine, only: str | None = None) -> Matcher:
    """The gallery's matcher, or one over --refs (only identity `only`'s images, if given);
    an unusable reference is skipped with one warning line."""
    if args.refs is not None:
        from facegate.references import SkippedReference, load_references

        def warn(skipped: SkippedReference) -> None:
            print(f"warning: reference skipped: {skipped.reason}", file=sys.stderr)

        return load_references(args.refs, engine, only=only, on_skip=warn).matcher
    from facegate.gallery import Gallery

    return Gallery.load(args.gallery, engine.fingerprint).matcher()


def _probe_faces(args: argparse.Namespace, engine: FaceEngine) -> list[Any]:
    """Usable faces in the probe image (a photo: judged at its native resolution); an image
    without one is bad input (exit 2)."""
    from facegate.imageio import load_image
    from facegate.vision.quality import DEFAULT_PHOTO_GATE

    faces = engine.encode(load_image(args.image), DEFAULT_PHOTO_GATE)
    if not faces:
        raise BadInputError(args.image, "no face found")
    usable = [f for f in faces if f.embedding is not None]
    if not usable:
        raise BadInputError(args.image, faces[0].quality.reason)
    return usable


def _result_json(result: MatchResult, face: Any) -> dict[str, Any]:
    return {
        "match": result.accepted,
        "identity": result.identity,
        "candidate": result.candidate,
        "distance": round(result.distance, 4),
        "margin": round(result.margin, 4),
        "reason": result.reason,
        "box": [round(v, 1) for v in face.detection.box],
    }


def _add_verify(sub: Any) -> None:
    parser = sub.add_parser("verify", help="1:1: is the face in IMAGE the claimed identity?")
    parser.add_argument("image", type=Path)
    parser.add_argument("--as", dest="identity", required=True, help="claimed identity")
    _add_match_args(parser)
    parser.set_defaults(handler=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    engine = _load_engine(args)
    matcher = _load_matcher(args, engine, only=args.identity)  # 1:1: the claim's refs alone
    if args.identity not in matcher:
        raise BadInputError(args.refs or args.gallery, f"{args.identity!r} is not enrolled")
    face = _probe_faces(args, engine)[0]  # largest face: the person at the reader
    result = matcher.verify(face.embedding, args.identity, args.threshold)
    if args.json:
        _print_json(_result_json(result, face))
    else:
        verdict = "MATCH" if result.accepted else "NO MATCH"
        print(f"{verdict} {args.identity} distance={result.distance:.3f} ({result.reason})")
    return EXIT_OK if result.accepted else EXIT_REJECTED


def _add_identify(sub: Any) -> None:
    parser = sub.add_parser("identify", help="1:K: who is in IMAGE? (one result per face)")
    parser.add_argument("image", type=Path)
    parser.add_argument(
        "--margin", type=float, default=0.1, help="min distance gap to the second-best identity"
    )
    _add_match_args(parser)
    parser.set_defaults(handler=_cmd_identify)


def _cmd_identify(args: argparse.Namespace) -> int:
    engine = _load_engine(args)
    matcher = _load_matcher(args, engine)
    faces = _probe_faces(args, engine)
    results = [(matcher.identify(f.embedding, args.threshold, args.margin), f) for f in faces]
    if args.json:
        _print_json({"faces": [_result_json(r, f) for r, f in results]})
    else:
        for result, _ in results:
            name = result.identity or "unknown"
            print(
                f"{name} distance={result.distance:.3f} margin={result.margin:.3f}"
                f" (nearest {result.candidate}: {result.reason})"
            )
    return EXIT_OK if any(r.accepted for r, _ in results) else EXIT_REJECTED


def _add_evaluate(sub: Any) -> None:
    parser = sub.add_parser("evaluate", help="EER, TAR@FAR and top-1 on DIR/<person>/*.jpg")
    parser.add_argument("dataset", type=Path, help="DIR/<person>/ or DIR/{train,val}/<person>/")
    parser.add_argument("--plot", type=Path, help="write the ROC curve PNG here")
    _add_engine_args(parser)
    parser.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from facegate.evaluation import evaluate, plot_roc

    engine = _load_engine(args)
    report, genuine, impostor = evaluate(engine, args.dataset)
    if args.plot:
        plot_roc({f"facegate {args.model}": (genuine, impostor)}, args.plot)
    if args.json:
        _print_json(report.to_json())
        return EXIT_OK
    roc = report.roc
    print(f"images {report.images}, failed to enroll {len(report.failures)}")
    print(f"pairs: {roc.pairs_genuine} genuine, {roc.pairs_impostor} impostor")
    print(f"EER {roc.eer:.2%} at L2 {roc.threshold_eer:.3f}")
    for key, tar in roc.tar_at_far.items():
        print(f"TAR {tar:.2%} at FAR {key} (L2 <= {roc.threshold_at_far[key]:.3f})")
    print(f"top-1 {report.top1:.2%} over {report.probes} probes")
    return EXIT_OK


def _add_enroll(sub: Any) -> None:
    p = sub.add_parser("enroll", help="build the gallery from enrollment.yaml (incremental)")
    p.add_argument("--config", type=Path, help="facegate.yaml: enrollment, gallery and models")
    p.add_argument("--enrollment", type=Path, help="enrollment.yaml (overrides the config)")
    p.add_argument("--gallery", type=Path, help="gallery file to write (overrides the config)")
    p.add_argument("--models", type=Path, help="folder built by `make models` (overrides)")
    p.add_argument("--skip-bad", action="store_true", help="warn about bad images, skip them")
    p.add_argument("--check", action="store_true", help="validate everything, write nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    walk = p.add_argument_group("walk-up enrollment (the running daemon takes the photos)")
    walk.add_argument("--capture", metavar="ID", help="photograph person ID at --door and enroll")
    walk.add_argument("--door", help="the door whose camera takes the photos")
    walk.add_argument("--name", help="display name (a new person; default: the id)")
    walk.add_argument("--images", type=int, default=8, help="photos to take, 1..20 (default 8)")
    walk.add_argument("--timeout", type=float, default=30.0, help="give up after s (default 30)")
    walk.add_argument(
        "--source", help="take the photos here from this camera instead (no daemon needed)"
    )
    walk.add_argument("--fps", type=float, help="frames per second of --source (default: door's)")
    p.set_defaults(handler=_cmd_enroll)


def _cmd_enroll(args: argparse.Namespace) -> int:
    if args.capture is not None:
        return _cmd_capture(args)
    from facegate.config import load_config
    from facegate.enroll import LazyEngine, enroll
    from facegate.vision.engine import default_models_dir

    config = load_config(args.config) if args.config else None
    enrollment = args.enrollment or (config.enrollment if config else None)
    gallery = args.gallery or (config.gallery if config else None)
    if enrollment is None or gallery is None:
        raise BadInputError("facegate enroll", "give --config FILE, or --enrollment and --gallery")
    models_dir = args.models or (config.models.dir if config else default_models_dir())
    if config:
        from facegate.enroll import photo_gate  # the photo gate the daemon enrolls with

        m = config.models
        engine = LazyEngine(models_dir, m.embedder, m.threads, photo_gate(config))
    else:
        engine = LazyEngine(models_dir)
    report = enroll(enrollment, gallery, engine, skip_bad=args.skip_bad, check_only=args.check)
    if args.json:
        _print_json(report.to_dict())
    else:
        _print_enroll_report(report)
    return EXIT_OK


def _cmd_capture(args: argparse.Namespace) -> int:
    from facegate.capture import MAX_IMAGES, MAX_TIMEOUT_S
    from facegate.walkup import WalkupRefused, WalkupRequest, walkup

    if args.door is None:
        raise BadInputError("--door", "required with --capture: whose camera takes the photos")
    if not 1 <= args.images <= MAX_IMAGES:
        raise BadInputError("--images", f"must be 1..{MAX_IMAGES}")
    if not 1 <= args.timeout <= MAX_TIMEOUT_S:
        raise BadInputError("--timeout", f"must be 1..{MAX_TIMEOUT_S:g} seconds")
    if args.fps is not None and not 0.5 <= args.fps <= 60:
        raise BadInputError("--fps", "must be 0.5..60")
    request = WalkupRequest(
        args.capture, args.door, args.name, args.images, args.timeout, args.source, args.fps
    )
    bar = _ProgressBar()
    try:
        report = walkup(args.config or DEFAULT_CONFIG, request, bar.show)
    except WalkupRefused as exc:
        bar.end()
        print(f"refused ({exc.code}): {exc}; nothing was written", file=sys.stderr)
        return EXIT_REJECTED
    finally:
        bar.end()
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    folder = report.photos[0].parent if report.photos else "-"
    verb = "added" if report.added else "updated"
    print(
        f"{verb} {report.person}: {len(report.photos)} photos in {folder}"
        f" ({report.capture_s:.1f} s); enrolled"
    )
    return EXIT_OK


class _ProgressBar:
    """`[#####-----] 4/8  turn your head a little to your left`: redrawn in place on a
    terminal, one line per change otherwise (logs, pipes)."""

    WIDTH = 20

    def __init__(self) -> None:
        self._tty = sys.stdout.isatty()
        self._last = ""

    def show(self, progress: Any) -> None:
        filled = round(self.WIDTH * progress.have / max(progress.need, 1))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"[{bar}] {progress.have}/{progress.need}  {progress.prompt}"
        if line == self._last:
            return
        if self._tty:
            print("\r" + line.ljust(len(self._last)), end="", flush=True)
        else:
            print(line, flush=True)
        self._last = line

    def end(self) -> None:
        if self._tty and self._last:
            print()
        self._last = ""


def _print_enroll_report(report: EnrollReport) -> None:
    print(f"{'person':<24} {'used':>4} {'reused':>6} {'rejected':>8} {'face px':>7} {'sharp':>6}")
    for p in report.people:
        px = "-" if p.mean_face_px is None else f"{p.mean_face_px:.0f}"
        sharp = "-" if p.mean_sharpness is None else f"{p.mean_sharpness:.3f}"
        print(
            f"{p.person_id:<24} {p.images_used:>4} {p.images_reused:>6} {len(p.rejected):>8} "
            f"{px:>7} {sharp:>6}"
        )
        for rejection in p.rejected:
            print(f"    rejected {Path(rejection.image).name}: {rejection.reason}")
    if report.written:
        done = f"wrote {report.gallery}"
    elif report.changed:
        done = "checked, nothing written"
    else:
        done = f"{report.gallery} is up to date, not rewritten"
    removed = f"; removed: {', '.join(report.removed)}" if report.removed else ""
    print(
        f"{report.enrolled} people, {report.embedded} images embedded, {report.reused} reused"
        f"{removed}; {done} in {report.seconds:.2f} s"
    )


def _add_run(sub: Any) -> None:
    parser = sub.add_parser("run", help="run the door daemon until SIGTERM")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="facegate.yaml")
    parser.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    # Importing the service (numpy, OpenCV, the runtime) takes about half a second; a SIGHUP
    # then would end the process silently (its default action). Nothing is loaded yet, so
    # there is nothing to reload: ignore it until the service installs its own handlers.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from facegate.service import Service

    return Service(args.config).run()


def _add_check_config(sub: Any) -> None:
    parser = sub.add_parser(
        "check-config", help="validate config, enrollment, models, key and gallery"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="facegate.yaml")
    parser.set_defaults(handler=_cmd_check_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from facegate.checks import check_all

    report = check_all(args.config)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    doors = ", ".join(report.config.door_ids)
    print(f"{args.config}: OK ({doors}; {report.people} people, {report.images} images)")
    return EXIT_OK


def _add_bench(sub: Any) -> None:
    parser = sub.add_parser("bench", help="latency, memory and accuracy vs face_recognition")
    parser.add_argument("--models", type=Path, help="folder built by `make models`")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="bench.json here")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the embedder")
    parser.add_argument("--json", action="store_true", help="print the headline keys as JSON")
    parser.set_defaults(handler=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from facegate.bench import BenchOptions, flat_keys, render_markdown, run_bench
    from facegate.vision.engine import default_models_dir

    models = args.models or default_models_dir()
    results = run_bench(BenchOptions(models, args.out, args.quick, args.threads))
    if args.json:
        _print_json(flat_keys(results))
    else:
        print(render_markdown(results))
    return EXIT_OK


def _add_liveness_eval(sub: Any) -> None:
    parser = sub.add_parser(
        "liveness-eval",
        help="simulated presentation attacks and live visitors: APCER/BPCER per species",
    )
    parser.add_argument(
        "--photos", type=Path,
        help="folder of <person>/ photo folders to render from (default: the models'"
        " 5-celebrity val split, never the train split the thresholds were set on)",
    )  # fmt: skip
    parser.add_argument("--per-kind", type=int, default=150, help="presentations per kind")
    parser.add_argument("--kinds", help="comma-separated kinds (default: every kind)")
    parser.add_argument("--seed", type=int, default=13, help="first seed")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--out", type=Path, help="write one JSON line per presentation here")
    parser.add_argument("--models", type=Path, help="folder built by `make models`")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=_cmd_liveness_eval)


def _cmd_liveness_eval(args: argparse.Namespace) -> int:
    from facegate.pad import evaluate
    from facegate.pad.species import KINDS
    from facegate.vision.engine import default_models_dir

    models = args.models or default_models_dir()
    photos = args.photos or models / "data" / "5-celebrity" / "val"
    if not photos.is_dir():
        raise BadInputError(photos, "no such folder of <person>/ photo folders")
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    if unknown := [kind for kind in kinds if kind not in KINDS]:
        raise BadInputError("--kinds", f"unknown {', '.join(unknown)} (known: {', '.join(KINDS)})")
    plan = evaluate.plan(models, photos, kinds, args.per_kind, args.seed)
    outcomes = evaluate.run(plan, max(1, args.jobs))
    if args.out is not None:
        evaluate.write(outcomes, args.out)
    summary = evaluate.summarise(outcomes)
    if args.json:
        _print_json(summary)
    else:
        print(evaluate.render_report(summary))
    return EXIT_OK


def _add_keys(sub: Any) -> None:
    parser = sub.add_parser("keys", help="make signing keys")
    keys_sub = parser.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser(
        "new", help="write a new unlock key (0600); ed25519 also writes the public key (.pub)"
    )
    new.add_argument("--type", choices=("ed25519", "hs256"), default="ed25519")
    new.add_argument("--out", type=Path, required=True, help="private key file to create")
    new.set_defaults(handler=_cmd_keys_new)


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from facegate.keys import KeyType, write_new_key

    key, written = write_new_key(KeyType(args.type), args.out)
    print(f"wrote {written[0]} (private, mode 0600: keep it where it signs)")
    if len(written) > 1:
        print(
            f"wrote {written[1]} (public: for whoever verifies: the door controllers of an"
            " unlock key, the devices' fleet.admin_public_key_file of an admin key)"
        )
        print(f"kid {key.public().kid}")
    else:
        print("hs256: the controller needs this same secret; give each door its own")
    return EXIT_OK


def _add_log(sub: Any) -> None:
    parser = sub.add_parser("log", help="the audit trail: who came, who was refused, when")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="facegate.yaml")
    parser.add_argument("--db", type=Path, help="audit file to read (default: audit.path)")
    parser.add_argument("--since", help="90s, 30m, 12h, 1d, 2w ago, or a date: 2026-11-30")
    parser.add_argument("--door", help="only this door")
    parser.add_argument("--person", help="only this person (or claimed identity)")
    parser.add_argument("--kind", choices=("granted", "denied", "unknown", "claim"))
    parser.add_argument("--limit", type=int, default=100, help="newest N rows (default 100)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="a JSON array of row objects")
    form.add_argument("--csv", action="store_true", help="CSV with a header line")
    parser.set_defaults(handler=_cmd_log)


def _cmd_log(args: argparse.Namespace) -> int:
    import time

    from facegate.audit import AuditQuery, AuditStore, parse_since

    if args.limit < 1:
        raise BadInputError("--limit", "must be at least 1")
    try:
        since = None if args.since is None else parse_since(args.since, time.time())
    except ValueError as exc:
        raise BadInputError("--since", str(exc)) from None
    if args.db is None:
        from facegate.config import load_config

        args.db = load_config(args.config).audit.path
    store = AuditStore.open_readonly(args.db)
    try:
        # One row more than asked tells whether there were more.
        query = AuditQuery(since, args.door, args.person, args.kind, args.limit + 1)
        rows = store.query(query)
    finally:
        store.close()
    more, rows = len(rows) > args.limit, rows[-args.limit :]
    if args.json:
        print(json.dumps([row.to_dict() for row in rows]))
    elif args.csv:
        _print_csv([row.to_dict() for row in rows])
    else:
        _print_log_table(rows)
    if more:
        print(f"(the newest {args.limit} rows; --limit to see more)", file=sys.stderr)
    return EXIT_OK


def _print_csv(rows: list[dict[str, Any]]) -> None:
    import csv

    from facegate.audit import AuditRow

    writer = csv.DictWriter(sys.stdout, fieldnames=list(AuditRow.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(rows)


def _print_log_table(rows: Sequence[Any]) -> None:
    from datetime import datetime

    if not rows:
        print("no entries")
        return
    table = [("time", "door", "kind", "person", "distance", "unlock", "code", "reason")]
    for row in rows:
        distance = "" if row.distance is None else f"{row.distance:.3f}"
        kind = row.kind if row.match is None else f"claim {'ok' if row.match else 'no'}"
        table.append((
            datetime.fromtimestamp(row.ts).strftime("%Y-%m-%d %H:%M:%S"), row.door, kind,
            row.person or "-", distance, "yes" if row.unlock else "", row.code, row.reason,
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[-1]]))


def _add_review(sub: Any) -> None:
    parser = sub.add_parser("review", help="unknown faces the doors kept: list, name, delete")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="facegate.yaml")
    parser.add_argument("--json", action="store_true", help="print the groups as JSON")
    actions = parser.add_subparsers(dest="review_command")
    assign = actions.add_parser("assign", help="make a group's faces photos of a person")
    assign.add_argument("group", help="group id, as `facegate review` lists it")
    assign.add_argument("--as", dest="person", required=True, help="person id to enroll as")
    assign.add_argument("--door", help="the door a new person may open")
    assign.add_argument("--name", help="display name of a new person")
    ignore = actions.add_parser("ignore", help="delete a group's faces")
    ignore.add_argument("group", help="group id, as `facegate review` lists it")
    forget = actions.add_parser("forget", help="delete faces older than DAYS")
    forget.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    for action in (assign, ignore, forget):
        action.add_argument("--config", dest="action_config", type=Path, help="facegate.yaml")
    parser.set_defaults(handler=_cmd_review)


def _cmd_review(args: argparse.Namespace) -> int:
    import time

    from facegate.config import load_config
    from facegate.review import ReviewStore, assign, find_group, group_faces

    config_path = getattr(args, "action_config", None) or args.config
    config = load_config(config_path)
    store = ReviewStore(config.review_dir)
    if args.review_command == "forget":
        if not args.older_than >= 0:
            raise BadInputError("--older-than", "must be a number of days >= 0")
        cutoff = time.time() - args.older_than * 86400
        removed = store.delete([f for f in store.faces() if f.ts < cutoff])
        print(f"deleted {removed} face(s) older than {args.older_than:g} days")
        return EXIT_OK
    groups = group_faces(store.faces())
    if args.review_command is None:
        _print_review(groups, args.json, config.review.enabled, store.folder)
        return EXIT_OK
    group = find_group(groups, args.group, store)
    if args.review_command == "ignore":
        print(f"deleted {store.delete(group.faces)} face(s) of group {group.id}")
        return EXIT_OK
    photos, added, warnings = assign(config, config_path, group, args.person, args.name, args.door)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    verb = "added" if added else "updated"
    print(f"{verb} {args.person}: {photos} photo(s) from group {group.id}; enrolled")
    return EXIT_OK


def _print_review(groups: Sequence[Any], as_json: bool, enabled: bool, folder: Path) -> None:
    from datetime import datetime

    def when(ts: float) -> str:
        return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")

    if as_json:
        _print_json([
            {"group": g.id, "faces": len(g.faces), "days": g.days, "doors": list(g.doors),
             "first_seen": g.first_ts, "last_seen": g.last_ts,
             "photos": [str(f.photo) for f in g.faces]}
            for g in groups
        ])  # fmt: skip
        return
    if not enabled:
        print(f"(review is off in the config; faces already in {folder} are listed)")
    if not groups:
        print(f"no unknown faces kept in {folder}")
        return
    print(f"{'group':<8} {'faces':>5} {'days':>4}  {'first seen':<16}  {'last seen':<16}  doors")
    for g in groups:
        print(
            f"{g.id:<8} {len(g.faces):>5} {g.days:>4}  {when(g.first_ts):<16}  "
            f"{when(g.last_ts):<16}  {','.join(g.doors)}  {g.faces[-1].photo}"
        )


def _add_bundle(sub: Any) -> None:
    parser = sub.add_parser("bundle", help="signed enrollment bundles for a site's devices")
    bundle = parser.add_subparsers(dest="bundle_command", required=True)
    build = bundle.add_parser("build", help="pack and sign enrollment.yaml and its photos")
    build.add_argument("--enrollment", type=Path, required=True, help="enrollment.yaml")
    build.add_argument("--key", type=Path, required=True, help="the site admin's Ed25519 key")
    build.add_argument("--site", required=True, help="the site the bundle is for")
    build.add_argument("--version", type=int, help="bundle version (default: now, epoch s)")
    build.add_argument("--out", type=Path, required=True, help="bundle file to write")
    build.set_defaults(handler=_cmd_bundle_build)
    publish = bundle.add_parser("publish", help="publish a bundle (retained) to its site")
    publish.add_argument("bundle", type=Path)
    publish.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="for mqtt:")
    publish.add_argument("--max-message-bytes", type=int, help="chunk above this size")
    publish.set_defaults(handler=_cmd_bundle_publish)
    status = bundle.add_parser("status", help="which device runs which bundle version")
    status.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="for mqtt:")
    status.add_argument("--site", help="default: the config's fleet.site")
    status.add_argument("--wait-s", type=float, default=2.0, help="collect acks this long")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_cmd_bundle_status)


def _cmd_bundle_build(args: argparse.Namespace) -> int:
    from facegate.fleet.bundle import build_bundle
    from facegate.keys import KeyType, load_private_key

    if args.version is not None and args.version < 1:
        raise BadInputError("--version", "must be a positive integer")
    key = load_private_key(args.key, KeyType.ED25519, field="--key")
    data = build_bundle(args.enrollment, key, args.site, args.version)
    _write_atomically(args.out, data)
    from facegate.fleet.bundle import peek_manifest

    manifest = peek_manifest(data)
    photos = len(manifest.files) - 1
    print(f"wrote {args.out}: site {manifest.site}, version {manifest.version}, {photos} photos,")
    print(f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return EXIT_OK


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _cmd_bundle_publish(args: argparse.Namespace) -> int:
    from facegate.config import load_config
    from facegate.files import read_regular_file
    from facegate.fleet.bundle import DEFAULT_MAX_BUNDLE_BYTES
    from facegate.fleet.publish import publish_bundle

    config = load_config(args.config)
    data = read_regular_file(args.bundle, DEFAULT_MAX_BUNDLE_BYTES, what="bundle")
    done = publish_bundle(config.mqtt, data, max_message_bytes=args.max_message_bytes)
    how = f"{done.chunks} chunks of <= {done.max_message_bytes} bytes" if done.chunks else "whole"
    print(f"published version {done.version} for site {done.site} ({done.size} bytes, {how})")
    return EXIT_OK


def _cmd_bundle_status(args: argparse.Namespace) -> int:
    from facegate.config import load_config
    from facegate.fleet.publish import collect_status, status_json

    config = load_config(args.config)
    site = args.site or (config.fleet.site if config.fleet else None)
    if site is None:
        raise BadInputError(args.config, "give --site, or set fleet.site", field="fleet")
    devices = collect_status(config.mqtt, site, args.wait_s)
    if args.json:
        _print_json(status_json(devices))
        return EXIT_OK
    print(f"{'device':<24} {'version':>12} {'status':<8} {'people':>6} {'errors':>6}  reason")
    for d in devices:
        people = "-" if d.people is None else str(d.people)
        print(f"{d.device:<24} {d.version:>12} {d.status:<8} {people:>6} {d.errors:>6}  {d.reason}")
    if not devices:
        print(f"no device of site {site} has acknowledged a bundle yet")
    return EXIT_OK


_SUBCOMMANDS: list[Callable[[Any], None]] = [
    _add_run,
    _add_check_config,
    _add_enroll,
    _add_verify,
    _add_identify,
    _add_evaluate,
    _add_bench,
    _add_liveness_eval,
    _add_log,
    _add_review,
    _add_keys,
    _add_bundle,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ModelError, GalleryError, FacegateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
