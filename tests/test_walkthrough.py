"""docs/TRAINER.md's new-user walk-through, run as written (own JSONL -> train -> resume -> extend -> eval -> plot)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TRAIN_DEPS

pytestmark = [pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras"), pytest.mark.slow]

DOC = Path(__file__).resolve().parents[1] / "docs" / "TRAINER.md"


def walkthrough_commands():
    match = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```", DOC.read_text(), re.S)
    assert match, "walk-through block missing from docs/TRAINER.md"
    return [line for line in match.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_walkthrough_runs_as_written(tiny_model_dir, tiny_data, tmp_path):
    from conftest import drift_env

    (tmp_path / "pairs.jsonl").write_text(tiny_data.read_text())
    (tmp_path / "my-model").symlink_to(tiny_model_dir)
    env = drift_env()
    outputs = []
    for line in walkthrough_commands():
        argv = shlex.split(line)
        if argv[0] == "drift":
            argv = [sys.executable, "-m", "drift.cli", *argv[1:]]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (line, done.stderr[-3000:])
        outputs.append(done)
    run = tmp_path / "runs" / "pairs-drift"
    assert (run / "iter_2" / "model").is_dir() and (tmp_path / "rouge.png").is_file() and (tmp_path / "loss.png").is_file()
    its = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in its if r["kind"] == "iteration"] == [-1, 1, 2]
    assert "demo" not in outputs[1].stderr  # the documented defaults, not the demo
    scores = json.loads(outputs[4].stdout[outputs[4].stdout.index("{"):])
    stored = json.loads((run / "iter_2" / "eval.json").read_text())
    assert scores["rouge1"] == stored["rouge1"]
    assert "held-out split: 8 examples" in outputs[4].stderr
