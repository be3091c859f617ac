"""experiments/paper_orderings: configs load as valid DriftConfigs; make_results renders numbers and verdicts."""
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
from drift.trainer import DriftConfig

EXP = Path(__file__).resolve().parents[1] / "experiments" / "paper_orderings"
CONFIGS = sorted((EXP / "configs").glob("*.yaml"))


def _load(name):
    sys.path.insert(0, str(EXP))
    try:
        spec = importlib.util.spec_from_file_location(f"po_{name}", EXP / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(EXP))


def test_one_config_per_arm_and_task():
    run_all = _load("run_all")
    assert {p.stem for p in CONFIGS} == {f"{t}_{a}" for t in run_all.TASKS for a in run_all.ARMS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid(path):
    cfg = DriftConfig.from_yaml(path).validate()
    assert cfg.data == path.stem.split("_")[0]
    if cfg.method != "sft" and not cfg.extra_epochs_on_fixed_data:
        assert cfg.iterations >= 3


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_scale_overrides_give_valid_configs(scale):
    run_all = _load("run_all")
    for path in CONFIGS:
        task, arm = path.stem.split("_", 1)
        opts = run_all.overrides(scale, task, arm, 7, Path("/tmp/x"))
        values = DriftConfig.from_yaml(path).to_dict()
        values.update({k[2:]: v for k, v in zip(opts[::2], opts[1::2])})
        DriftConfig.from_dict(values).validate()


def _write(root, task, arm, seed, recs):
    d = root / task / arm / f"seed{seed}"
    d.mkdir(parents=True)
    lines = [json.dumps({"kind": "step", "loss": 1.0, "iteration": 1})]
    lines += [json.dumps({"kind": "iteration", "iteration": i, "stage": f"iter_{i}", **r}) for i, r in recs]
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_make_results_mean_std_and_verdicts(tmp_path):
    mr = _load("make_results")
    rl = {  # arm -> per-seed final ROUGE-L
        "drift": [30.0, 32.0, 34.0], "spin": [20.0, 21.0, 22.0], "sft_epoch1": [10.0, 11.0, 12.0],
        "sft_epoch2": [9.0, 12.0, 15.0], "drift_no_dam": [31.0, 33.0, 35.0], "drift_no_oal": [40.0, 41.0, 42.0],
        "drift_extra_epochs": [25.0, 25.5, 26.0],
    }
    for arm, vals in rl.items():
        for seed, v in zip((42, 43, 44), vals):
            if arm.startswith("sft"):
                recs = [(0, {"rouge1": v + 10, "rouge2": v - 5, "rougeL": v, "train_s": 2.0})]
            elif arm == "drift_extra_epochs":
                recs = [(1, {"rouge1": 1, "rouge2": 1, "rougeL": v - 1, "gamma": 0.1}),
                        (2, {"rouge1": 1, "rouge2": 1, "rougeL": v})]
            else:
                g0 = {"drift": 0.1}.get(arm, 0.2)
                recs = [(1, {"rouge1": 1, "rouge2": 1, "rougeL": v - 2, "gamma": g0 + 0.001 * seed, "train_s": 1.0}),
                        (2, {"rouge1": 1, "rouge2": 1, "rougeL": v, "gamma": 0.5 + 0.001 * seed, "train_s": 1.5})]
            _write(tmp_path, "xsum", arm, seed, recs)
    text = mr.render(tmp_path)
    m, s = statistics.fmean([30.0, 32.0, 34.0]), statistics.stdev([30.0, 32.0, 34.0])
    assert f"| drift | iter_2 | 3 | 1.00 ± 0.00 | 1.00 ± 0.00 | {m:.2f} ± {s:.2f} |" in text
    assert "| sft_epoch1 | iter_0 | 3 | 21.00 ± 1.00 | 6.00 ± 1.00 | 11.00 ± 1.00 |" in text
    assert "| drift | 2.50 ± 0.00 |" in text  # time per arm: 1.0 + 1.5 per seed
    verdicts = {c: v for c, _, v in mr.claims(mr.collect(tmp_path)["xsum"])}
    assert verdicts["DRIFT > SPIN"] == "holds"                       # 32 vs 21, std 2
    assert verdicts["SPIN > continued SFT (SFT epoch 2)"] == "holds"  # 21 vs 12, std 3
    assert verdicts["SFT epoch 2 < SFT epoch 1"] == "inconclusive"   # 11 vs 12, std 3
    assert verdicts["DRIFT > DRIFT without DAM"] == "inconclusive"   # 32 vs 33, std 2
    assert verdicts["DRIFT > DRIFT without OAL"] == "does not hold"  # 32 vs 41
    assert verdicts["iteration 2 > more epochs on iteration-1 data"] == "holds"  # 32 vs 25.5
    gamma = [v for c, v in verdicts.items() if c.startswith("gamma")]
    assert gamma == ["holds"]  # ~0.143 -> ~0.543


def test_make_results_last_record_per_stage_wins(tmp_path):
    mr = _load("make_results")
    p = tmp_path / "m.jsonl"
    rec = {"kind": "iteration", "iteration": 1, "stage": "iter_1"}
    p.write_text(json.dumps({**rec, "rougeL": 1.0}) + "\n" + json.dumps({**rec, "rougeL": 2.0}) + "\n")
    assert [r["rougeL"] for r in mr.read_iterations(p)] == [2.0]
    assert mr.verdict(None, (1.0, 0.0)) == "missing runs"
    with pytest.raises(ValueError, match="runs"):
        mr.render(tmp_path / "empty")
