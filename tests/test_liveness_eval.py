"""`facegate liveness-eval` (issue 13, item 3): the statistics it reports, and a smoke run of
the whole thing on two presentations (the full evaluation is a CLI run, not a test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from facegate.cli import main
from facegate.pad.evaluate import Outcome, Rate, clopper_pearson_upper, summarise

TRAIN = Path(__file__).resolve().parent.parent / "models" / "data" / "5-celebrity" / "train"


@pytest.mark.parametrize(
    ("errors", "n", "upper"),
    [
        (0, 150, 1 - 0.05 ** (1 / 150)),  # the closed form for zero errors: 1.98 %
        (0, 10, 1 - 0.05 ** (1 / 10)),
        (1, 10, 0.3942),  # exact one-sided 95 % bounds (tables, e.g. R's binom.test)
        (5, 100, 0.1024),
        (10, 10, 1.0),
    ],
)
def test_clopper_pearson_upper_bounds(errors: int, n: int, upper: float) -> None:
    assert math.isclose(clopper_pearson_upper(errors, n), upper, abs_tol=5e-4)
    assert Rate(errors, n).upper == clopper_pearson_upper(errors, n)


def test_the_summary_counts_attacks_accepted_and_live_refused() -> None:
    def outcome(kind: str, verdict: str, seed: int = 0, **more: object) -> Outcome:
        fields: dict[str, object] = {
            "live_frame": 12 if verdict == "live" else None,
            "attack_frame": 20 if verdict == "attack" else None,
            "usable_frame": 5,
            "frames": 30,
            "cost_ms": 2.0,
            "blinks": 0,
            **more,
        }
        return Outcome(kind, "p", "s.jpg", seed, verdict, **fields)  # type: ignore[arg-type]

    report = summarise(
        [outcome("print", "attack"), outcome("print", "undecided"), outcome("print", "live")]
        + [outcome("live_moving", "live"), outcome("live_moving", "attack")]
        + [outcome("live_answering", "live", challenge=(("turn_left", True),))]
    )
    prints = report["print"]
    assert isinstance(prints, dict)
    assert prints["apcer"].startswith("1/3 = 33.3%")
    assert prints["attack_verdict_s_median"] == 1.5
    live = report["live_moving"]
    assert isinstance(live, dict)
    assert live["bpcer"].startswith("1/2 = 50.0%")
    assert live["time_to_live_s_median"] == 0.7 and live["live_within_1s"] == 1
    answering = report["live_answering"]
    assert isinstance(answering, dict) and answering["challenge_rejected"].startswith("0/1")


def test_a_smoke_run_of_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outcomes.jsonl"
    code = main(
        ["liveness-eval", "--photos", str(TRAIN), "--per-kind", "1", "--jobs", "1",
         "--kinds", "print,live_moving", "--out", str(out), "--json"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"print", "live_moving"}
    assert report["print"]["live"] == 0  # the attack was not accepted
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and {json.loads(line)["kind"] for line in lines} == set(report)
