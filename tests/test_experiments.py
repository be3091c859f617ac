"""experiments/paper_orderings: configs load as valid DriftConfigs; make_results renders numbers and verdicts."""
import json
import statistics
from pathlib import Path

import pytest

from conftest import load_module
from drift.trainer import DriftConfig

EXP = Path(__file__).resolve().parents[1] / "experiments" / "paper_orderings"
CONFIGS = sorted((EXP / "configs").glob("*.yaml"))


def _load(name):
    return load_module(EXP / f"{name}.py", f"po_{name}")


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
    (d / "wall_s.txt").write_text("10.0\n")
    return d


# arm -> per-seed ROUGE-L at every self-play stage (iter_1..iter_3) or at iter_0 for the SFT arms
_FIXTURE = {
    # drift beats spin by exactly 2 in every seed, although the seeds' spread (std 5) overlaps
    "drift": [20.0, 25.0, 30.0], "spin": [18.0, 23.0, 28.0],
    "sft_epoch1": [10.0, 11.0, 12.0], "sft_epoch2": [12.0, 9.0, 11.0],   # diffs -2, 2, 1: inconclusive
    "drift_no_dam": [19.0, 24.1, 28.9], "drift_no_oal": [23.0, 28.0, 33.0],  # no_oal better: reversed
    "drift_extra_epochs": [15.0, 20.0, 25.0],
}


def _fixture(root):
    for arm, vals in _FIXTURE.items():
        for seed, v in zip((42, 43, 44), vals):
            if arm.startswith("sft"):
                recs = [(0, {"rouge1": v + 10, "rouge2": v - 5, "rougeL": v, "train_s": 2.0})]
            else:
                recs = [(0, {"rouge1": v - 5, "rouge2": 1, "rougeL": v - 5, "train_s": 2.0})]
                recs += [(i, {"rouge1": v + i, "rouge2": 1, "rougeL": v + i, "gamma": 0.1 * i + 0.001 * seed,
                              "train_s": 1.0}) for i in (1, 2, 3)]
            _write(root, "xsum", arm, seed, recs)


def _comparisons(mr, root):
    out = {}
    for cid, _, rows in mr.claims(mr.collect(root)["xsum"]):
        for label, cmp in rows:
            out[(cid, label)] = cmp
    return out


def test_make_results_tables_and_paired_verdicts(tmp_path):
    mr = _load("make_results")
    _fixture(tmp_path)
    (tmp_path / "xsum_rouge.png").write_bytes(b"png")
    page = tmp_path / "page"
    text = mr.render(tmp_path, page_dir=page)
    m, s = statistics.fmean([23.0, 28.0, 33.0]), statistics.stdev([23.0, 28.0, 33.0])
    assert f"| drift | iter_3 | 3 | {m:.2f} ± {s:.2f} | 1.00 ± 0.00 | {m:.2f} ± {s:.2f} | 0.3430 ± 0.0010 |" in text
    assert "| sft_epoch1 | iter_0 | 3 | 21.00 ± 1.00 | 6.00 ± 1.00 | 11.00 ± 1.00 | - |" in text
    assert "| drift | 3 | 10 ± 0 | 5 ± 0 |" in text  # wall from wall_s.txt; compute: 2 + 3 x 1 per seed
    assert (page / "results" / "xsum_rouge.png").read_bytes() == b"png"
    assert "](results/xsum_rouge.png)" in text
    assert (page / "results" / "xsum_mean_std.png").read_bytes()[:4] == b"\x89PNG"
    c = _comparisons(mr, tmp_path)
    ds = c[("drift_spin", "drift iter_3 vs spin iter_3")]["rougeL"]
    assert (ds.n, ds.wins, ds.diff) == (3, 3, (2.0, 0.0)) and ds.verdict == "holds"
    # unpaired, the same numbers would be inside the spread
    assert mr.verdict(ds.a, ds.b) == "inconclusive"
    sft = c[("sft_epochs", "sft_epoch1 vs sft_epoch2")]["rougeL"]
    assert sft.verdict == "inconclusive" and sft.wins == 2
    assert c[("no_oal", "iter_1 (the paper's ablation point)")]["rouge1"].verdict == "does not hold"
    nd = c[("no_dam", "iter_3")]["rougeL"]
    diffs = [1.0, 0.9, 1.1]
    t = statistics.fmean(diffs) / (statistics.stdev(diffs) / 3 ** 0.5)
    assert nd.t == pytest.approx(t) and nd.verdict == "holds"
    new = c[("new_iteration", "drift iter_2 vs extra epochs iter_2")]["rouge1"]
    assert new.diff[0] == pytest.approx(5.0) and new.verdict == "holds"
    g = c[("gamma", "drift gamma iter_3 vs iter_1")]["gamma"]
    assert g.diff[0] == pytest.approx(0.2) and g.verdict == "holds"
    assert "**DRIFT > SPIN (same number of iterations)** — at this scale: holds in every comparison below." in text
    assert "**DRIFT > DRIFT without OAL (ablation)** — at this scale: does not hold" in text


@pytest.mark.parametrize("diffs, expected", [
    ([1.0, 1.1, 0.9], "holds"), ([-2.0, -2.1, -1.9], "does not hold"), ([1.0, -1.0, 0.5], "inconclusive"),
    ([0.0, 0.0, 0.0], "inconclusive"), ([3.0, 3.0], "holds"), ([5.0], "inconclusive (one seed)"),
    # [1 - a, 1, 1 + a] has std a, so t = sqrt(3) / a: 2.5 < t_0.95(2) = 2.92 < 3.2
    ([1.0 - 3 ** 0.5 / 2.5, 1.0, 1.0 + 3 ** 0.5 / 2.5], "inconclusive"),
    ([1.0 - 3 ** 0.5 / 3.2, 1.0, 1.0 + 3 ** 0.5 / 3.2], "holds"),
])
def test_paired_verdict_rule(diffs, expected):
    mr = _load("make_results")
    assert mr.paired_verdict(diffs)[1] == expected


def test_make_results_missing_arm_and_sweep_table(tmp_path):
    mr = _load("make_results")
    _write(tmp_path, "xsum", "drift", 42, [(1, {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "gamma": 0.1})])
    (tmp_path / "sweep").mkdir()
    res = {"center": {"learning_rate": 3e-6, "beta": 0.1, "oal_weight": 0.1, "temperature": "greedy", "stage": "iter_1",
                      "rouge1": 22.5, "rouge2": 4.0, "rougeL": 17.25, "gamma": 0.13}}
    spec = {"center": {}, "seed": 42, "iterations": 1, "select_on": "rougeL"}
    res["beta=0.5"] = dict(res["center"], beta=0.5)
    (tmp_path / "sweep" / "summary.json").write_text(json.dumps({"spec": spec, "results": res, "chosen": {"beta": 0.1}}))
    for point, preds in (("center", ["a", "b", "c"]), ("beta=0.5", ["a", "x", "c"])):
        (tmp_path / "sweep" / point / "iter_1").mkdir(parents=True)
        (tmp_path / "sweep" / point / "iter_1" / "eval.json").write_text(json.dumps({"predictions": preds}))
    text = mr.render(tmp_path)
    assert "| center | 3e-06 | 0.1 | 0.1 | greedy | iter_1 | 22.50 | 4.00 | 17.25 | 0.1300 | 3/3 |" in text
    assert "| beta=0.5 | 3e-06 | 0.5 | 0.1 | greedy | iter_1 | 22.50 | 4.00 | 17.25 | 0.1300 | 2/3 |" in text
    assert "Chosen: beta = 0.1." in text
    assert "xsum, drift iter_1 vs spin iter_1: missing runs." in text


def test_sweep_points_and_choice():
    sweep = _load("sweep")
    spec = {"center": {"learning_rate": 3e-6, "beta": 0.1, "oal_weight": 0.1, "temperature": "greedy"},
            "axes": {"learning_rate": [1e-6, 3e-6], "beta": [0.1, 0.5], "oal_weight": [0.1],
                     "temperature": ["greedy", 0.7]}, "select_on": "rougeL"}
    names = [n for n, _ in sweep.points(spec)]
    assert names == ["center", "learning_rate=1e-06", "beta=0.5", "temperature=0.7"]
    assert sweep.settings_opts(dict(spec["center"], temperature=0.7))[-4:] == ["--do_sample", "true", "--temperature", "0.7"]
    results = {"center": {"rougeL": 10.0}, "learning_rate=1e-06": {"rougeL": 11.0}, "beta=0.5": {"rougeL": 10.0},
               "temperature=0.7": {"rougeL": 9.0}}
    assert sweep.choose(spec, results) == {"learning_rate": 1e-6, "beta": 0.1, "oal_weight": 0.1, "temperature": "greedy"}


def test_shared_stages_link_and_prune(tmp_path):
    ss = _load("shared_stages")
    sft, drift = tmp_path / "sft_epoch1", tmp_path / "drift"
    for d, stage, files in ((sft, "base", ["eval.json"]), (sft, "iter_0", ["eval.json", "model/config.json",
                            "model/model.safetensors"]), (drift, "iter_1", ["generations.pt", "masks.pt", "reference.pt",
                            "eval.json", "model/model.safetensors"])):
        for f in files:
            (d / stage / f).parent.mkdir(parents=True, exist_ok=True)
            (d / stage / f).write_text(f"{d.name}/{stage}/{f}")
    spin = tmp_path / "spin"
    ss.seed_arm(spin, "spin", sft, drift)
    assert (spin / "iter_0" / "model" / "model.safetensors").samefile(sft / "iter_0" / "model" / "model.safetensors")
    assert (spin / "iter_1" / "generations.pt").samefile(drift / "iter_1" / "generations.pt")
    assert not (spin / "iter_1" / "reference.pt").exists() and not (spin / "iter_1" / "model").exists()
    extra = tmp_path / "extra"
    ss.seed_arm(extra, "drift_extra_epochs", sft, drift)
    assert (extra / "iter_1" / "reference.pt").samefile(drift / "iter_1" / "reference.pt")
    sampled = tmp_path / "sampled"
    ss.seed_self_play(sampled, sft, None)  # sampled sweep points: own generations
    assert (sampled / "iter_0").is_dir() and not (sampled / "iter_1").exists()
    sft2 = tmp_path / "sft2"
    ss.seed_arm(sft2, "sft_epoch2", sft, drift)
    assert (sft2 / "base" / "eval.json").is_file() and not (sft2 / "iter_0").exists()
    freed = ss.prune_weights(spin)
    assert freed == len("sft_epoch1/iter_0/model/model.safetensors")
    assert not (spin / "iter_0" / "model" / "model.safetensors").exists()
    assert (sft / "iter_0" / "model" / "model.safetensors").is_file()  # the source keeps its link
    assert (spin / "iter_0" / "eval.json").is_file() and (spin / "iter_1" / "masks.pt").is_file()


def test_make_results_last_record_per_stage_wins(tmp_path):
    mr = _load("make_results")
    p = tmp_path / "m.jsonl"
    rec = {"kind": "iteration", "iteration": 1, "stage": "iter_1"}
    p.write_text(json.dumps({**rec, "rougeL": 1.0}) + "\n" + json.dumps({**rec, "rougeL": 2.0}) + "\n")
    assert [r["rougeL"] for r in mr.read_iterations(p)] == [2.0]
    assert mr.verdict(None, (1.0, 0.0)) == "missing runs"
    with pytest.raises(ValueError, match="runs"):
        mr.render(tmp_path / "empty")


def test_diagnostics_time_counts_in_compute_and_eval_cost(tmp_path):
    """Runs that did not log ``diag_s`` take it from the stage's eval.json; a logged one is kept; it counts as
    evaluation time (the held-out cost line) and in the arm's compute."""
    mr = _load("make_results")
    evaluated = {"rouge1": 1, "rouge2": 1, "rougeL": 1, "eval_s": 10.0, "diag_pairs": 4}
    d = _write(tmp_path, "xsum", "drift", 42, [(0, evaluated), (1, {**evaluated, "diag_s": 7.0, "train_s": 20.0})])
    (d / "iter_0").mkdir()
    (d / "iter_0" / "eval.json").write_text(json.dumps({"diagnostics": {"seconds": 5.0, "pairs": 4}}))
    (d / "iter_1").mkdir()
    (d / "iter_1" / "eval.json").write_text(json.dumps({"diagnostics": {"seconds": 99.0}}))
    (d / "config.json").write_text(json.dumps({"num_eval_examples": 25}))
    data = mr.collect(tmp_path)
    assert [r.get("diag_s") for r in data["xsum"]["drift"]["seed42"]] == [5.0, 7.0]
    line = "".join(mr.eval_cost_lines(data, tmp_path))
    # evaluation (10 + 5) + (10 + 7) = 32 s of 52 s compute; 250 / 25 examples: 1 + 32/52 * 9 = 6.5x
    assert "costs 16 ± 1 s" in line and "62% of the study's compute" in line and "about 6.5x longer" in line


@pytest.mark.parametrize("split", sorted((EXP / "splits").glob("*.json")), ids=lambda p: p.stem)
def test_split_files_are_the_trainers_split(split):
    """The committed id lists are exactly the rows the trainer's seeded split picks at that scale."""
    from drift import data

    run_all = _load("run_all")
    s = json.loads(split.read_text())
    task, scale = split.stem.rsplit("_", 1)
    assert (len(s["train_ids"]), len(s["eval_ids"])) == run_all.counts(scale, task)
    cfg = DriftConfig.from_yaml(EXP / "configs" / f"{task}_drift.yaml")
    spec = data.resolve(cfg.data, None, None, None, None)
    rows = data.read_rows(spec.path, spec.prompt_column, spec.response_column)
    assert len(rows) == s["rows_in_set"]
    train, held_out = data.load_splits(spec, len(s["train_ids"]), len(s["eval_ids"]), cfg.data_seed)
    assert [r.prompt for r in train] == [rows[i].prompt for i in s["train_ids"]]
    assert [r.prompt for r in held_out] == [rows[i].prompt for i in s["eval_ids"]]
    assert not set(s["train_ids"]) & set(s["eval_ids"])
    # the file as the trainer's input (what run_all passes) gives those very rows
    assert data.load_splits(spec, -1, -1, cfg.data_seed, ids=data.read_split_file(split)) == (train, held_out)
    assert "--split_file" in run_all.overrides(scale, task, "drift", 42, Path("out"))


def test_loss_terms_weight_oal_by_lambda_and_last_step_wins(tmp_path):
    mr = _load("make_results")
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"oal_weight": 0.5}))
    steps = [{"kind": "step", "iteration": 0, "step": 1, "loss": 9.0},  # SFT step: not a self-play step
             {"kind": "step", "iteration": 1, "step": 1, "self_play_loss": 9.0, "oal_loss": 9.0, "rewards/accuracy": 0.0},
             {"kind": "step", "iteration": 1, "step": 1, "self_play_loss": 0.6, "oal_loss": 10.0, "rewards/accuracy": 0.5},
             {"kind": "step", "iteration": 2, "step": 1, "self_play_loss": 0.4, "oal_loss": 30.0, "rewards/accuracy": 1.0}]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in steps) + "\n")
    sp, oal, acc = mr.loss_terms(d)
    assert (sp, oal, acc) == (pytest.approx(0.5), pytest.approx(10.0), pytest.approx(0.75))


def test_detectable_difference_is_the_paired_threshold():
    mr = _load("make_results")
    assert mr.threshold(1.0, 3) == pytest.approx(2.920 / 3 ** 0.5)
    assert mr.threshold(0.0, 3) == 0.0 and mr.threshold(1.0, 1) == float("inf")
    # a difference just above the threshold holds, just below it does not (the rule and the figure agree)
    sd = 0.5
    for mean, expected in ((mr.threshold(sd, 3) * 1.01, "holds"), (mr.threshold(sd, 3) * 0.99, "inconclusive")):
        diffs = [mean - sd, mean, mean + sd]  # std exactly sd
        assert mr.paired_verdict(diffs)[1] == expected


@pytest.mark.parametrize("diffs, expected", [
    ([0.1, -0.1, 0.0], "holds"), ([2.0, 2.1, 1.9], "does not hold"), ([-2.0, -2.2, -1.8], "does not hold"),
    ([0.5, -1.5, 1.5], "inconclusive"), ([0.9, 0.9, 0.9], "holds"), ([1.0, 1.0, 1.0], "inconclusive"),
    ([0.0], "inconclusive (one seed)"),
])
def test_equivalence_verdict(diffs, expected):
    mr = _load("make_results")
    lo, hi, v = mr.equivalence_verdict(diffs, 1.0)
    assert v == expected
    if len(diffs) > 1:
        m, s = statistics.fmean(diffs), statistics.stdev(diffs)
        assert (lo, hi) == (pytest.approx(m - 2.920 * s / 3 ** 0.5), pytest.approx(m + 2.920 * s / 3 ** 0.5))


def _general(path, mmlu, asdiv, n=200):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tasks": {"mmlu": {"score": mmlu, "samples": n}, "asdiv": {"score": asdiv, "samples": n}}}))


def test_general_ability_table_and_verdict(tmp_path):
    mr = _load("make_results")
    _fixture(tmp_path)
    _general(tmp_path / "base_general_eval.json", 0.23, 0.115)
    for seed, (sft, drift) in zip((42, 43, 44), ((0.25, 0.255), (0.26, 0.26), (0.24, 0.245))):
        _general(tmp_path / "xsum" / "sft_epoch1" / f"seed{seed}" / "general_eval.json", sft, 0.10)
        _general(tmp_path / "xsum" / "drift" / f"seed{seed}" / "general_eval.json", drift, 0.10 - 0.05)
        _general(tmp_path / "xsum" / "spin" / f"seed{seed}" / "general_eval.json", drift, 0.10)
    text = mr.render(tmp_path)
    assert "| base (SmolLM2-135M-Instruct, untrained) | - | - | 23.00 | 11.50 |" in text
    assert "| SFT start (iteration 0) | xsum | 3 | 25.00 ± 1.00 | 10.00 ± 0.00 |" in text
    assert "| DRIFT, last iteration | xsum | 3 | 25.33 ± 0.76 | 5.00 ± 0.00 |" in text
    assert "the first 200 documents of each set" in text
    # MMLU: differences +0.5, 0, +0.5 points: inside ±1 -> holds; ASDiv: -5 in every seed -> does not hold
    assert "xsum, MMLU accuracy (points): DRIFT minus its SFT start +0.33 ± 0.29 points over 3 seeds" in text
    mmlu = next(line for line in text.splitlines() if line.startswith("- xsum, MMLU accuracy"))
    asdiv = next(line for line in text.splitlines() if line.startswith("- xsum, ASDiv"))
    assert mmlu.endswith("**holds**.") and asdiv.endswith("**does not hold**.")
    assert "checkpoints were not scored" not in text
    _write(tmp_path, "mtsdialog", "drift", 42, [(0, {"rouge1": 1, "rouge2": 1, "rougeL": 1})])
    assert "The mtsdialog runs' checkpoints were not scored" in mr.render(tmp_path)


def test_mechanism_claims_and_diagnostics_table(tmp_path):
    mr = _load("make_results")
    # drift's difference-token log-prob ends 0.1 above spin's in every seed; recall equal to drift_no_oal's
    for arm, shift in (("drift", 0.1), ("spin", 0.0), ("drift_no_oal", 0.05)):
        for seed in (42, 43, 44):
            recs = [(0, {"rouge1": 1, "rouge2": 1, "rougeL": 1, "diag_logp_difference": -5.0, "diag_logp_lcs": -1.0,
                         "diag_vocab_recall": 0.3, "diag_vocab_precision": 0.4})]
            recs += [(i, {"rouge1": 1, "rouge2": 1, "rougeL": 1, "diag_logp_difference": -5.0 + i * shift + seed / 1000,
                          "diag_logp_lcs": -1.0, "diag_vocab_recall": 0.3 + seed / 1000, "diag_vocab_precision": 0.4})
                     for i in (1, 2, 3)]
            _write(tmp_path, "xsum", arm, seed, recs)
    c = {(cid, label): cmp for cid, _, rows in mr.claims(mr.collect(tmp_path)["xsum"], mr.mechanism_specs)
         for label, cmp in rows}
    d = c[("diag_difference", "drift iter_3 vs spin iter_3")]["diag_logp_difference"]
    assert d.diff[0] == pytest.approx(0.3) and d.verdict == "holds"
    r = c[("diag_recall", "drift iter_3 vs drift_no_oal iter_3")]["diag_vocab_recall"]
    assert r.diff[0] == pytest.approx(0.0) and r.verdict == "inconclusive"
    text = mr.render(tmp_path)
    assert "**DRIFT raises the reference's difference-token log-prob more than SPIN (equal steps)** — at this " \
           "scale: holds in every comparison below." in text
    # iteration 0 is the same in the three arms: one row naming them
    assert "| spin, drift, drift_no_oal | iter_0 | 3 | -5.000 ± 0.000 | -1.000 ± 0.000 | 0.3000 ± 0.0000 | " \
           "0.4000 ± 0.0000 |" in text


def test_commands_lose_machine_paths():
    mr = _load("make_results")
    assert mr.shown_command("python -m drift.general_eval --model /home/u/.cache/drift/smollm2 --limit 5") == \
        "python -m drift.general_eval --model <smollm2> --limit 5"


def test_page_names_the_study_commit_and_the_tasks_left_off(tmp_path):
    mr = _load("make_results")
    _fixture(tmp_path)
    _write(tmp_path, "mtsdialog", "drift", 42, [(1, {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})])
    (tmp_path / "commands.txt").write_text("# python run_all.py --scale cpu   (commit 29dbd4e66f52)\npython -m x\n")
    text = mr.render(tmp_path, tasks=["xsum"])
    assert "Git commit of the code that ran the study: `29dbd4e66f52`" in text
    assert "Left off this page: mtsdialog, whose runs are incomplete here (1 finished runs" in text
    assert "## mtsdialog" not in text and "## xsum" in text


def _fake_scheduler(run_all, tmp_path, monkeypatch, seeds=(42, 43), fail=(), budget=None, expected=None, jobs=1):
    """A Scheduler whose units 'run' instantly on a fake clock that advances by each arm's expected seconds."""
    arms = list(run_all.ARMS)
    units = run_all.plan(["xsum"], arms, list(seeds))
    if expected is not None:
        monkeypatch.setitem(run_all.EXPECTED_S, "gpu", expected)
    sched = run_all.Scheduler(tmp_path, "gpu", units, jobs, 1, False, "cpu", budget)
    clock, started = [0.0], []

    def fake_run(unit):
        started.append(unit)
        for need in run_all.needs(unit.arm, arms):
            assert sched.state[run_all.Unit(unit.task, need, unit.seed)] == "done", (unit, need)
        if unit.name in fail:
            raise RuntimeError("boom")
        clock[0] += (expected or {}).get(unit.arm, 1.0)
        return (expected or {}).get(unit.arm, 1.0)

    monkeypatch.setattr(sched, "_run", fake_run)
    monkeypatch.setattr(sched, "elapsed", lambda: clock[0])
    return sched, started


def test_units_start_in_run_order_once_their_shared_stages_are_done(tmp_path, monkeypatch):
    run_all = _load("run_all")
    sched, started = _fake_scheduler(run_all, tmp_path, monkeypatch)
    state = sched.run()
    assert set(state.values()) == {"done"} and len(started) == 14
    assert [u.arm for u in started[:6]] == ["sft_epoch1", "sft_epoch1", "drift", "drift", "spin", "spin"]
    assert [u.arm for u in started[-2:]] == ["drift_extra_epochs", "drift_extra_epochs"]
    assert run_all.needs("spin", list(run_all.ARMS)) == ("sft_epoch1", "drift")
    assert run_all.needs("sft_epoch2", list(run_all.ARMS)) == ("sft_epoch1",)
    assert run_all.needs("spin", ["spin", "drift"]) == ()  # no SFT source: the arm computes its own stages


def test_budget_starts_no_unit_expected_to_end_past_it(tmp_path, monkeypatch):
    run_all = _load("run_all")
    expected = {"sft_epoch1": 10, "drift": 30, "spin": 25, "drift_no_dam": 25, "drift_no_oal": 25, "sft_epoch2": 10,
                "drift_extra_epochs": 20}
    # 2 x (10 + 30 + 25) = 130 s for the main comparison; no_dam (25) fits twice more, then nothing does
    sched, started = _fake_scheduler(run_all, tmp_path, monkeypatch, budget=185, expected=expected)
    state = sched.run()
    done = sorted({u.arm for u, s in state.items() if s == "done"})
    assert done == ["drift", "drift_no_dam", "sft_epoch1", "spin"]
    skipped = [e for e in json.loads((tmp_path / "schedule.json").read_text())["events"] if e["status"] == "skipped"]
    assert {e["reason"] for e in skipped} == {"budget"} and len(skipped) == 6


def test_a_failed_unit_skips_what_needs_it_and_the_rest_goes_on(tmp_path, monkeypatch):
    run_all = _load("run_all")
    sched, started = _fake_scheduler(run_all, tmp_path, monkeypatch, fail=("xsum/drift/seed42",))
    state = {u.name: s for u, s in sched.run().items()}
    assert state["xsum/drift/seed42"] == "failed"
    assert all(state[f"xsum/{a}/seed42"] == "skipped" for a in ("spin", "drift_no_dam", "drift_no_oal", "drift_extra_epochs"))
    assert state["xsum/sft_epoch2/seed42"] == "done"
    assert all(state[f"xsum/{a}/seed43"] == "done" for a in run_all.ARMS)


def test_gpu_scale_runs_several_units_at_once_and_skips_general_ability():
    run_all = _load("run_all")
    assert run_all.DEFAULT_JOBS["gpu"] > 1 and run_all.GENERAL_EVAL["gpu"]["tasks"] == ()
    assert set(run_all.EXPECTED_S["gpu"]) == set(run_all.ARMS) and set(run_all.RUN_ORDER) == set(run_all.ARMS)
    assert run_all.RUN_ORDER[:3] == ("sft_epoch1", "drift", "spin") and run_all.RUN_ORDER[-1] == "drift_extra_epochs"
    opts = run_all.overrides("gpu", "xsum", "drift", 42, Path("o"), model="/m")
    assert opts[opts.index("--model_name_or_path") + 1] == "/m"


@pytest.mark.parametrize("scale", ["smoke", "gpu"])
def test_validation_split_is_cut_from_training_rows_only(tmp_path, scale):
    sweep, run_all = _load("sweep"), _load("run_all")
    src = json.loads(run_all.split_file(scale, "xsum").read_text())
    val = json.loads(sweep.validation_split(scale, "xsum", tmp_path / "v.json").read_text())
    assert val["train_ids"] + val["eval_ids"] == src["train_ids"]
    assert not set(val["eval_ids"]) & set(src["eval_ids"])  # the held-out rows are never read
    assert len(val["eval_ids"]) == max(1, len(src["train_ids"]) // 5)
    opts = sweep.with_split(run_all.overrides(scale, "xsum", "drift", 42, tmp_path), tmp_path / "v.json")
    assert opts[opts.index("--split_file") + 1] == str(tmp_path / "v.json")
    assert int(opts[opts.index("--num_eval_examples") + 1]) == len(val["eval_ids"])
    assert int(opts[opts.index("--num_train_examples") + 1]) == len(val["train_ids"])


def test_gpu_runs_take_the_gpu_sweeps_choice_for_self_play_arms(tmp_path, monkeypatch):
    run_all = _load("run_all")
    chosen = tmp_path / "chosen_hparams_gpu.yaml"
    monkeypatch.setattr(run_all, "chosen_file", lambda scale: chosen)
    assert "--oal_weight" not in run_all.overrides("gpu", "xsum", "drift", 42, tmp_path)  # no sweep yet
    chosen.write_text("scale: gpu\nlearning_rate: 3.0e-06\nbeta: 0.1\noal_weight: 0.01\ntemperature: 0.7\n")
    opts = run_all.overrides("gpu", "xsum", "drift", 42, tmp_path)
    assert opts[opts.index("--oal_weight") + 1] == "0.01" and opts[opts.index("--temperature") + 1] == "0.7"
    assert "--oal_weight" not in run_all.overrides("gpu", "xsum", "sft_epoch1", 42, tmp_path)
    assert "--oal_weight" not in run_all.overrides("gpu", "xsum", "drift", 42, tmp_path, chosen=False)
    assert "--oal_weight" not in run_all.overrides("cpu", "xsum", "drift", 42, tmp_path)  # cpu: in the configs


def test_gpu_sweep_spec_spans_small_lambdas_and_keeps_its_points_valid():
    import yaml
    sweep = _load("sweep")
    spec = yaml.safe_load((EXP / "sweep_xsum_gpu.yaml").read_text())
    lambdas = spec["axes"]["oal_weight"]
    assert min(lambdas) <= spec["center"]["oal_weight"] / 30 and {"learning_rate", "beta"} <= set(spec["axes"])
    names = [n for n, _ in sweep.points(spec)]
    assert names[0] == "center" and len(names) == len(set(names))
    chosen = sweep.choose(spec, {"center": {"rougeL": 1.0}, "oal_weight=0.01": {"rougeL": 2.0}})
    assert chosen["oal_weight"] == 0.01 and chosen["beta"] == spec["center"]["beta"]
    assert chosen["temperature"] == spec["center"]["temperature"]  # not swept: the center's


def test_gpu_section_says_not_run_yet_without_gpu_results(tmp_path):
    mr = _load("make_results")
    _fixture(tmp_path / "cpu")
    text = mr.render(tmp_path / "cpu", gpu_root=tmp_path / "gpu")  # no such folder
    assert "## GPU scale" in text and "Not run yet" in text and "scripts/gpu_study.sh" in text
    (tmp_path / "gpu").mkdir()
    assert "Not run yet" in mr.render(tmp_path / "cpu", gpu_root=tmp_path / "gpu")  # empty folder


def test_gpu_section_renders_the_same_verdicts_from_gpu_results(tmp_path):
    mr = _load("make_results")
    _fixture(tmp_path / "cpu")
    gpu = tmp_path / "gpu"
    _fixture(gpu)  # the same hand-made numbers: the same verdicts, now under the GPU heading
    (gpu / "commands.txt").write_text("# python run_all.py --scale gpu   (commit 0123abcd4567)\n")
    (gpu / "xsum_timing.json").write_text(json.dumps({"task": "xsum", "seconds": 431.2, "budget_s": 480, "rc": 0}))
    (gpu / "xsum_schedule.json").write_text(json.dumps({"events": [
        {"unit": "xsum/drift_extra_epochs/seed45", "status": "skipped", "reason": "budget"},
        {"unit": "xsum/spin/seed45", "status": "running"},
        {"unit": "xsum/drift/seed44", "status": "skipped", "reason": "budget"}]}))  # drift finished on a later visit
    (gpu / "xsum_rouge.png").write_bytes(b"gpu-png")
    page = tmp_path / "page"
    text = mr.render(tmp_path / "cpu", page_dir=page, gpu_root=gpu)
    cpu_part, gpu_part = text.split("## GPU scale", 1)
    assert "Not run yet" not in gpu_part
    assert "Git commit of the code that ran the study: `0123abcd4567`" in gpu_part
    assert "### The paper's claims" in gpu_part and "#### ROUGE on the held-out split" in gpu_part
    assert "**DRIFT > SPIN (same number of iterations)** — at this scale: holds in every comparison below." in gpu_part
    assert "needs" in gpu_part and "#### Time per arm" in gpu_part and "#### Loss terms" in gpu_part
    assert "`xsum`: 431 s of GPU time" in gpu_part
    assert "xsum/drift_extra_epochs/seed45 (budget)" in gpu_part and "xsum/spin/seed45" in gpu_part
    assert "xsum/drift/seed44" not in gpu_part
    assert (page / "results" / "gpu_xsum_rouge.png").read_bytes() == b"gpu-png"
    assert (page / "results" / "gpu_xsum_mean_std.png").is_file() and "](results/gpu_xsum_rouge.png)" in gpu_part
    assert (page / "results" / "xsum_mean_std.png").is_file()  # the CPU plot is not overwritten by the GPU one
    assert "Held-out size" not in gpu_part  # the 250-example cost note is for the smaller scales


def test_grad_norm_table_from_the_sweep(tmp_path):
    mr = _load("make_results")
    g = {"pairs": 32, "stage": 1, "batches": 8, "beta": {"0.5": {
        "dam_grad_norm": 5.0, "oal_grad_norm": 16.0, "cosine": 0.04, "dam_loss": 0.69, "oal_loss": 160.0,
        "ratio": {"0.01": 0.032, "0.3": 0.96}, "value_ratio": {"0.01": 2.3, "0.3": 69.6}}}}
    (tmp_path / "g.json").write_text(json.dumps(g))
    lines = mr.grad_norm_lines(tmp_path / "g.json")
    assert "| 0.5 | 5 | 16 | 0.040 | 0.032 (2.3) | 0.96 (69.6) |" in lines
    assert mr.grad_norm_lines(tmp_path / "missing.json") == []


def test_a_less_valuable_arm_waits_until_every_seed_of_a_more_valuable_one_started(tmp_path):
    run_all = _load("run_all")
    U = run_all.Unit
    units = run_all.plan(["xsum"], list(run_all.ARMS), [42, 43])
    sched = run_all.Scheduler(tmp_path, "gpu", units, 6, 1, True, "cpu")
    sched.state.update({U("xsum", "sft_epoch1", 42): "done", U("xsum", "sft_epoch1", 43): "done",
                        U("xsum", "drift", 42): "done", U("xsum", "drift", 43): "running"})
    assert sched._startable(U("xsum", "spin", 42)) == "start"
    # spin43 waits for drift43 and needs no more than drift_extra_epochs42: extra waits, so a budget that
    # runs out drops whole arms, not seeds of several
    assert sched._startable(U("xsum", "drift_extra_epochs", 42)) is None
    assert sched._startable(U("xsum", "drift_no_dam", 42)) is None
    # sft_epoch2 needs only sft_epoch1: it fills a slot while the drift runs go on
    assert sched._startable(U("xsum", "sft_epoch2", 42)) == "start"
    sched.state.update({U("xsum", "spin", 42): "running", U("xsum", "spin", 43): "skipped"})
    assert sched._startable(U("xsum", "drift_no_dam", 42)) == "start"
