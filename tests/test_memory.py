"""What the daemon keeps in memory (issue 17, item 4): only the models in use, each
model file's pages dropped once XNNPACK holds its own copy of the weights, optional
features' libraries imported only when the feature is on, and after the first frame none
of the file pages start-up alone read (never a page the process changed).

RSS itself is a benchmark figure (scripts/rss_breakdown.py): these tests check the causes,
which either hold or do not, and are never timed."""

from __future__ import annotations

import json
import mmap
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from broker import MosquittoBroker, free_port
from door_site import DOOR, RESIDENT, Daemon, hallway, make_site
from facegate import memory
from facegate.vision.engine import MODEL_FILES
from facegate.vision.runtime import load_interpreter, release_file_pages

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from rss_breakdown import smaps_groups, status_kb  # noqa: E402

MB = 1024  # smaps counts kB


def _resident_kb(pid: int | str, path: Path) -> int | None:
    """Rss of every mapping of `path` in process `pid`, or None when nothing maps it."""
    for row in smaps_groups(pid):
        if row["mapping"] == str(path.resolve()):
            return int(row.get("Rss", 0))
    return None


def fresh_interpreter(code: str) -> dict[str, Any]:
    """Run `code` in a new Python process (its own address space to measure); the JSON
    object on its last line of output."""
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    found: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    return found


def test_the_int8_embedder_file_is_not_kept_resident_once_loaded(models_dir: Path) -> None:
    # A fresh interpreter: no other test's interpreter maps the same file there.
    path = models_dir / MODEL_FILES["int8"]
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(REPO / 'scripts')!r})\n"
        "from rss_breakdown import smaps_groups\n"
        "from facegate.vision.runtime import load_interpreter\n"
        f"path = Path({str(path)!r})\n"
        "interpreter = load_interpreter(path, 2)\n"
        "interpreter.invoke()\n"
        "rows = [r for r in smaps_groups('self') if r['mapping'] == str(path.resolve())]\n"
        "print(json.dumps({'mapped': len(rows), 'rss_kb': sum(r['Rss'] for r in rows)}))\n"
    )
    found = fresh_interpreter(code)
    # Still mapped (the interpreter owns it) but not resident: 23 MB before the release.
    assert found["mapped"] == 1, found
    assert found["rss_kb"] < 2 * MB, found


def test_only_read_only_shared_mappings_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 4096)  # 1 MB
    with path.open("rb") as shared_file, path.open("r+b") as private_file:
        shared = mmap.mmap(shared_file.fileno(), 0, prot=mmap.PROT_READ)
        private = mmap.mmap(private_file.fileno(), 0, flags=mmap.MAP_PRIVATE)
        private[:4] = b"mine"  # a private copy of the page, not in the file
        assert shared[4096 * 7] == 0 and _resident_kb("self", path)  # both resident
        released = release_file_pages(path)
        # The shared read-only one went (and reads back from the file), the private one
        # with its change stayed.
        assert released == len(shared)
        assert private[:4] == b"mine" and shared[:4] == bytes(range(4))
        shared.close()
        private.close()


def test_after_start_drops_clean_file_pages_and_keeps_changed_ones(tmp_path: Path) -> None:
    path = tmp_path / "library.bin"
    content = bytes(range(256)) * 4096  # 1 MB
    with path.open("wb") as written:
        written.write(content)
        os.fsync(written.fileno())  # as a library on disk is: no dirty page in the cache
    with path.open("r+b") as file:
        clean = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        changed = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE)
        changed[:4] = b"mine"  # one private copy makes the whole mapping one to keep
        assert clean[:] == content and changed[4:] == content[4:]  # every page resident
        memory.release_file_pages()
        (group,) = [r for r in smaps_groups("self") if r["mapping"] == str(path)]
        # Both mappings are in the group: only the changed one is still resident, whole.
        assert (group["mappings"], group["Rss"], group["Anonymous"]) == (2, 1024, 4)
        assert changed[:4] == b"mine" and clean[:] == content
        clean.close()
        changed.close()


def test_libraries_work_the_same_after_their_pages_are_dropped() -> None:
    # In a fresh interpreter: OpenCV, numpy and the TFLite runtime, relocated and in use.
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO / 'scripts')!r})\n"
        "import cv2, numpy as np\n"
        "from rss_breakdown import smaps_groups\n"
        "from facegate import memory\n"
        "def cv2_kb():\n"
        "    return sum(r['Rss'] for r in smaps_groups('self') if '/cv2/cv2' in r['mapping'])\n"
        "image = np.arange(480 * 640 * 3, dtype=np.uint32).astype(np.uint8).reshape(480, 640, 3)\n"
        "before = (cv2.resize(image, (320, 240)), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))\n"
        "resident = cv2_kb()\n"
        "released = memory.release_file_pages()\n"
        "dropped = cv2_kb()\n"
        "after = (cv2.resize(image, (320, 240)), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))\n"
        "same = all(np.array_equal(a, b) for a, b in zip(before, after))\n"
        "print(json.dumps({'released': released, 'resident': resident, 'dropped': dropped,\n"
        "                  'same': same}))\n"
    )
    found = fresh_interpreter(code)
    assert found["same"], found
    assert found["released"] > 10 * MB * 1024, found  # bytes: numpy's and OpenCV's libraries
    assert found["dropped"] < found["resident"] / 2, found


@pytest.mark.parametrize("role", ["int8", "landmarks", "detector_short"])
def test_a_model_whose_file_pages_were_dropped_answers_exactly_as_before(
    models_dir: Path, role: str
) -> None:
    path = models_dir / MODEL_FILES[role]
    released = load_interpreter(path, 2)
    kept = Interpreter(model_path=str(path), num_threads=2)
    kept.allocate_tensors()
    rng = np.random.default_rng(17)
    detail = released.get_input_details()[0]
    if detail["dtype"] == np.float32:
        probe = rng.random(detail["shape"], dtype=np.float32)
    else:
        probe = rng.integers(-128, 128, detail["shape"]).astype(detail["dtype"])
    answers = []
    for interpreter in (released, kept):
        interpreter.set_tensor(detail["index"], probe)
        interpreter.invoke()
        answers.append([interpreter.get_tensor(o["index"]) for o in kept.get_output_details()])
    for ours, reference in zip(*answers, strict=True):
        np.testing.assert_array_equal(ours, reference)


# -- the daemon as a process --------------------------------------------------------------

#: One line per module the interpreter imports (PYTHONPROFILEIMPORTTIME, on stderr). The
#: self time can be negative: an import on another thread meanwhile is subtracted from it
#: ("import time:   -729603 |      20659 | facegate.prometheus", seen under load).
IMPORTED = re.compile(r"^import time:\s+-?\d+ \|\s+-?\d+ \|\s*(\S+)$", re.MULTILINE)


def _run_door(root: Path, broker: MosquittoBroker, *, metrics: bool) -> tuple[set[str], str]:
    """Start `facegate run` (default models: int8 embedder, liveness passive) on an empty
    hallway; the modules it imported and its /proc/<pid>/maps once ready."""
    site = make_site(root, broker.port, people={RESIDENT: [DOOR]}, scene=hallway(2),
                     recognition={"liveness": "passive"})  # fmt: skip
    if metrics:
        with site.config.open("a") as file:
            file.write(f"metrics: {{enabled: true, listen: '127.0.0.1:{free_port()}'}}\n")
    daemon = Daemon(site.config, env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        daemon.wait_ready()
        daemon.wait_log(r"memory after start: VmRSS [\d.]+ MB")
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        print(f"metrics={metrics}: VmRSS {status_kb(daemon.pid)['VmRSS'] / MB:.1f} MB after ready")
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    return set(IMPORTED.findall(daemon.log())), maps


def test_the_door_loads_only_the_models_and_libraries_its_config_uses(
    tmp_path: Path, mosquitto: MosquittoBroker, models_dir: Path
) -> None:
    modules, maps = _run_door(tmp_path / "plain", mosquitto, metrics=False)
    assert "facegate.service" in modules  # the import log is there and read right
    mapped = {Path(line.split(maxsplit=5)[5]).name for line in maps.splitlines()
              if line.count(" ") >= 5 and line.rstrip().endswith(".tflite")}  # fmt: skip
    assert mapped == {MODEL_FILES["detector_short"], MODEL_FILES["landmarks"], MODEL_FILES["int8"]}
    # Metrics are off by default: neither prometheus_client nor its HTTP server is loaded.
    assert not {m for m in modules if m.startswith(("prometheus_client", "http.server"))}

    with_metrics, _ = _run_door(tmp_path / "metrics", mosquitto, metrics=True)
    assert {"prometheus_client", "facegate.prometheus"} <= with_metrics
