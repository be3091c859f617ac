"""The ``drift`` command and DriftConfig: help, YAML + overrides, clear errors before any model loads."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import pytest

from conftest import TRAIN_DEPS

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if anything tries to load a model (errors must come first)."""
    import transformers

    from drift.trainer import policy as run_module

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the configuration/data error")

    monkeypatch.setattr(run_module, "load_model", boom)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr("drift.assets.smollm2_model_dir", boom)


@pytest.mark.parametrize("command", ["train", "generate", "eval", "plot", "bench"])
def test_help_of_each_command(command, capsys):
    from drift.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"drift {command}" in out
    if command == "train":
        assert "--learning_rate" in out and "Peak AdamW learning rate" in out
    if command in ("eval", "generate"):  # only the options they use
        assert "--max_new_tokens" in out and "--model" in out
        assert "--learning_rate" not in out and "--save_steps" not in out and "--lora_r" not in out


def test_version(capsys):
    import drift
    from drift.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"drift {drift.__version__}"


def test_bare_boolean_flags_and_comma_separated_lists(capsys):
    from drift.cli import build_parser
    from drift.trainer import config_from_args

    args = build_parser().parse_args(["train", "--gradient_checkpointing", "--do_sample", "false", "--use_peft",
                                      "--report_to", "", "--lora_target_modules", "q_proj,v_proj"])
    cfg = config_from_args(args)
    assert (cfg.gradient_checkpointing, cfg.do_sample, cfg.use_peft) == (True, False, True)
    assert cfg.lora_target_modules == ["q_proj", "v_proj"] and cfg.report_to == []
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--lora_target_modules A,B,... Module names LoRA adapts. Comma-separated." in out
    assert "--gradient_checkpointing [true|false]" in out and "Bare flag: true." in out


@pytest.mark.parametrize("key,meant", [("learning_rat", "learning_rate"), ("lr", "learning_rate"),
                                       ("torch_dtype", "dtype"), ("batch_size", "per_device_train_batch_size"),
                                       ("bf_16", "bf16")])
def test_unknown_key_suggests_the_field(tmp_path, capsys, key, meant):
    from drift.cli import main

    y = tmp_path / "c.yaml"
    y.write_text(f"{key}: 1\n")
    assert main(["train", "--config", str(y)]) == 2
    err = capsys.readouterr().err
    assert f"'{key}': did you mean {meant}?" in err and "valid fields" not in err, err


def test_every_config_field_has_help():
    from drift.trainer import DriftConfig

    for f in dataclasses.fields(DriftConfig):
        assert f.metadata.get("help"), f.name


def test_yaml_then_cli_overrides(tmp_path):
    from drift.cli import build_parser
    from drift.trainer import DriftConfig, config_from_args
    from drift.trainer.config import DEMO_FILE

    y = tmp_path / "c.yaml"
    y.write_text("method: spin\nlearning_rate: 2.0e-6\niterations: 3\nlora_target_modules: [o_proj]\n")
    args = build_parser().parse_args(["train", "--config", str(y), "--iterations", "5", "--do_sample", "true"])
    cfg = config_from_args(args).validate()
    assert (cfg.method, cfg.learning_rate, cfg.iterations, cfg.do_sample) == ("spin", 2e-6, 5, True)
    assert cfg.lora_target_modules == ["o_proj"]
    args = build_parser().parse_args(["train", "--config", str(y), "--lora_target_modules", "q_proj,v_proj"])
    assert config_from_args(args).validate().lora_target_modules == ["q_proj", "v_proj"]
    assert DriftConfig.from_yaml(DEMO_FILE).validate().method == "drift"


def test_bare_train_is_the_demo_config(capsys):
    from drift.cli import build_parser, _base_settings
    from drift.trainer import DriftConfig, config_from_args
    from drift.trainer.config import DEMO_FILE

    args = build_parser().parse_args(["train"])
    assert config_from_args(args, _base_settings(args, "train")) == DriftConfig.from_yaml(DEMO_FILE)
    assert "built-in demo" in capsys.readouterr().err  # it says so
    args = build_parser().parse_args(["train", "--demo", "--data", "mtsdialog"])
    got = config_from_args(args, _base_settings(args, "train"))
    assert got == dataclasses.replace(DriftConfig.from_yaml(DEMO_FILE), data="mtsdialog", output_dir="runs/demo-mtsdialog")


def test_options_start_from_the_documented_defaults(tmp_path, capsys):
    """`drift train --data my.jsonl` runs DriftConfig's defaults (what --help prints), not the demo's."""
    from drift.cli import build_parser, _base_settings
    from drift.trainer import DriftConfig, config_from_args

    for argv in (["train", "--data", "my.jsonl"], ["train", "--data", "xsum"], ["eval", "--data", "my.jsonl"]):
        args = build_parser().parse_args(argv)
        assert config_from_args(args, _base_settings(args, argv[0])) == DriftConfig(data=argv[2]), argv
    assert "demo" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    shown = capsys.readouterr().out
    defaults = DriftConfig()
    for name in ("learning_rate", "num_train_examples", "oal_weight", "save_steps", "max_new_tokens"):
        assert f"(default: {getattr(defaults, name)!r})" in " ".join(shown.split()), name
    assert "the defaults are the built-in demo" not in (DriftConfig.__doc__ or "")
    with pytest.raises(ValueError, match="--demo: data must be a demo set"):
        args = build_parser().parse_args(["train", "--demo", "--data", "my.jsonl"])
        _base_settings(args, "train")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("method", "dpo", "method"),
        ("learning_rate", "-1", "learning_rate"),
        ("learning_rate", "fast", "learning_rate"),
        ("sft_learning_rate", "-1e-5", "sft_learning_rate"),
        ("per_device_train_batch_size", "0", "per_device_train_batch_size"),
        ("gradient_accumulation_steps", "1.5", "gradient_accumulation_steps"),
        ("beta", "0", "beta"),
        ("oal_weight", "-0.5", "oal_weight"),
        ("top_p", "1.5", "top_p"),
        ("num_train_examples", "0", "num_train_examples"),
        ("do_sample", "maybe", "do_sample"),
        ("generation_backend", "vllm", "generation_backend"),
        ("dtype", "float8", "dtype"),
    ],
)
def test_bad_values_fail_before_any_model_loads(no_model_loads, tmp_path, capsys, field, value, match):
    from drift.cli import main

    if field == "generation_backend":
        import importlib.util

        if importlib.util.find_spec("vllm") is not None:
            pytest.skip("vllm is installed here")
    rc = main(["train", f"--{field}={value}", "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and match in err, err
    assert not (tmp_path / "out").exists()


def test_unknown_yaml_field(tmp_path, capsys, no_model_loads):
    from drift.cli import main

    y = tmp_path / "c.yaml"
    y.write_text("learning_rat: 1.0e-5\n")
    assert main(["train", "--config", str(y)]) == 2
    assert "learning_rat" in capsys.readouterr().err


def _bad_inputs(root: Path, good: Path):
    lines = good.read_text().splitlines()
    (root / "empty.jsonl").write_text("")
    (root / "torn.jsonl").write_text("\n".join(lines[:3] + ['{"prompt": "a", "response": '] + lines[3:]) + "\n")
    (root / "latin1.jsonl").write_bytes(("\n".join(lines[:1]) + "\n").encode() + b'{"prompt": "caf\xe9", "response": "x"}\n')
    (root / "latin1.csv").write_bytes(b"prompt,response\nok,fine\ncaf\xe9,x\n")
    (root / "broken.yaml").write_text("method: drift\nbeta: [0.1\nseed: 3\n")
    return [
        (["--data", str(root / "empty.jsonl")], "empty.jsonl: the file has no rows"),
        (["--data", str(root / "torn.jsonl")], "torn.jsonl, line 4: invalid JSON"),
        (["--data", str(root / "latin1.jsonl")], "latin1.jsonl, line 2: not UTF-8 text (byte 0xe9"),
        (["--data", str(root / "latin1.csv")], "latin1.csv, line 3: not UTF-8 text"),
        (["--config", str(root / "broken.yaml")], "broken.yaml, line 3 column 5: invalid YAML"),
        (["--data", str(good), "--num_train_examples", "8", "--num_eval_examples", "4",
          "--model_name_or_path", str(root / "no-such-model")], "model_name_or_path: "),
    ]


def test_bad_files_fail_in_one_line_before_anything_is_written(tiny_data, tmp_path, capsys, monkeypatch):
    """A bad config: file, line and problem in one line, exit code 2, no run folder left behind."""
    from drift.cli import main

    monkeypatch.setattr("drift.assets.smollm2_model_dir", lambda: (_ for _ in ()).throw(AssertionError("model")))
    for argv, expected in _bad_inputs(tmp_path, tiny_data):
        out = tmp_path / "out"
        rc = main(["train", *argv, "--output_dir", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, (argv, err)
        assert expected in err[-1] and err[-1].startswith("drift train: error: "), (expected, err)
        assert not out.exists(), argv


def test_trackers_are_checked():
    import importlib.util

    from drift.trainer import DriftConfig

    with pytest.raises(ValueError, match="report_to: unknown tracker 'nope'"):
        DriftConfig(report_to=["nope"]).validate()
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ValueError, match="report_to: tracker 'wandb' is not installed"):
            DriftConfig(report_to=["wandb"]).validate()


def test_inconsistent_settings():
    from drift.trainer import DriftConfig

    with pytest.raises(ValueError, match="iterations"):
        DriftConfig(extra_epochs_on_fixed_data=3, iterations=2).validate()
    with pytest.raises(ValueError, match="oal_weight"):
        DriftConfig(method="drift", oal_weight=0.0).validate()


def test_missing_column_fails_before_any_model_loads(no_model_loads, tiny_data, tmp_path):
    from drift.trainer import DriftConfig, train

    cfg = DriftConfig(data=str(tiny_data), prompt_column="document", output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="prompt_column.*'document'.*\\['prompt', 'response'\\]"):
        train(cfg)
    cfg = DriftConfig(data=str(tiny_data), response_column="summary", output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="response_column"):
        train(cfg)
    cfg = DriftConfig(data=str(tiny_data), num_train_examples=100, output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="num_train_examples"):
        train(cfg)
    cfg = DriftConfig(data=str(tmp_path / "nope.jsonl"), output_dir=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="data"):
        train(cfg)


def test_output_dir_named_from_data_and_method(tmp_path):
    """The default output folder: runs/<data stem>-<method>, never the raw path; different runs never share a folder."""
    from drift.trainer import DriftConfig
    from drift.atomic import write_json
    from drift.trainer.rundir import resolve_output_dir

    root = tmp_path / "runs"
    fp = {"train_examples": ["a"], "eval_examples": ["b"]}
    drift = resolve_output_dir(DriftConfig(data="/data/pairs.jsonl"), fp, root)
    spin = resolve_output_dir(DriftConfig(data="/data/pairs.jsonl", method="spin"), fp, root)
    assert (drift.output_dir, spin.output_dir) == (str(root / "pairs-drift"), str(root / "pairs-spin"))
    assert resolve_output_dir(DriftConfig(data="xsum"), fp, root).output_dir == str(root / "xsum-drift")
    assert resolve_output_dir(DriftConfig(output_dir="mine"), fp, root).output_dir == "mine"
    write_json(root / "pairs-drift" / "config.json", drift.to_dict())
    write_json(root / "pairs-drift" / "fingerprint.json", fp)
    assert resolve_output_dir(DriftConfig(data="/data/pairs.jsonl"), fp, root).output_dir == drift.output_dir  # resume
    notes = []
    other = resolve_output_dir(DriftConfig(data="/data/pairs.jsonl", beta=0.3), fp, root, notes=notes)
    assert other.output_dir == str(root / "pairs-drift-2") and "beta" in notes[0]
    changed = resolve_output_dir(DriftConfig(data="/data/pairs.jsonl"), {**fp, "train_examples": ["c"]}, root)
    assert changed.output_dir == str(root / "pairs-drift-2")


def test_two_methods_on_one_file_do_not_collide(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    from conftest import tiny_config
    from drift.trainer import train

    monkeypatch.chdir(tmp_path)
    for method in ("drift", "spin"):
        records = train(tiny_config(tiny_model_dir, tiny_data, None, method=method))
        assert records.output_dir == Path("runs") / f"pairs-{method}"
        assert (tmp_path / "runs" / f"pairs-{method}" / "iter_1" / "model").is_dir()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["pairs-drift", "pairs-spin"]


def test_changed_settings_refuse_to_resume(tiny_data, tmp_path, no_model_loads):
    from drift.trainer import DriftConfig, train
    from drift.atomic import write_json

    out = tmp_path / "out"
    old = DriftConfig(data=str(tiny_data), output_dir=str(out), num_train_examples=8, num_eval_examples=4)
    write_json(out / "config.json", dataclasses.replace(old, beta=0.5).to_dict())
    with pytest.raises(ValueError, match="beta"):
        train(old)


def test_plot_writes_png(tmp_path, capsys):
    from drift.cli import main

    runs = []
    for name, base in (("drift", 20.0), ("spin", 19.0)):
        d = tmp_path / name
        d.mkdir()
        recs = [{"kind": "iteration", "iteration": k, "stage": f"iter_{k}", "method": name, "run": name,
                 "rouge1": base + k, "rouge2": 3.0 + k, "rougeL": 15.0 + k, "gamma": 0.2 + 0.1 * k} for k in range(3)]
        recs.insert(1, {"kind": "step", "iteration": 1, "step": 1, "loss": 0.7})
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        runs.append(str(d))
    png = tmp_path / "fig.png"
    assert main(["plot", *runs, "--output", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "missing")]) == 2


def test_bench_lists_available(capsys):
    from drift.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "no_such_benchmark"])
    assert "iteration" in str(e.value.code)


def test_eval_and_generate_commands(tiny_model_dir, tiny_data, tmp_path, capsys):
    from drift.cli import main

    common = ["--model", str(tiny_model_dir), "--data", str(tiny_data), "--num_train_examples", "8",
              "--num_eval_examples", "3", "--max_prompt_length", "16", "--max_new_tokens", "4"]
    assert main(["eval", *common]) == 0
    printed = capsys.readouterr().out
    scores = json.loads(printed[printed.index("{"):])
    assert set(scores) == {"rouge1", "rouge2", "rougeL"}
    out = tmp_path / "gen.jsonl"
    assert main(["generate", *common, "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and set(rows[0]) == {"prompt", "reference", "generation", "ended", "generation_ids"}


# --- options: no abbreviations, "did you mean" as for YAML keys ---------------------------------

@pytest.mark.parametrize("argv, hint", [
    (["train", "--lr", "1e-5"], "(--lr: did you mean --learning_rate?)"),  # was taken as --lr_scheduler_type
    (["train", "--batch_size", "2"], "(--batch_size: did you mean --per_device_train_batch_size?)"),
    (["train", "--learning_rat=1e-5"], "(--learning_rat: did you mean --learning_rate?)"),
    (["train", "--lr_sched", "constant"], "(--lr_sched: did you mean --lr_scheduler_type?)"),
    (["generate", "--outpt", "x.jsonl"], "(--outpt: did you mean --output?)"),
    (["train", "--max_length", "64"], "(--max_length: did you mean --max_prompt_length and --max_response_length? "
                                      "(TRL's max_length caps prompt + completion together;"),
    (["train", "--zzz", "1"], "(--zzz: no option of that name)"),
])
def test_unknown_or_abbreviated_options_fail_with_the_option_meant(argv, hint, capsys, no_model_loads):
    from drift.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith(f"drift {argv[0]}: error: unrecognized arguments: "), err
    assert hint in err[-1], err[-1]


@pytest.mark.parametrize("argv, says", [
    (["eval", "--batch_size", "2"], "--batch_size: an option of --general (lm-evaluation-harness), given without it; "
                                    "held-out ROUGE takes --per_device_eval_batch_size"),
    (["eval", "--limit", "5"], "--limit: an option of --general (lm-evaluation-harness), given without it"),
])
def test_general_evaluation_options_without_general_fail_in_one_line(argv, says, capsys, no_model_loads):
    from drift.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"drift eval: error: {says}"], err


def test_every_parser_refuses_abbreviations():
    import argparse

    from drift.cli import build_parser

    parsers = [build_parser()]
    parsers += [c for a in parsers[0]._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices.values()]
    assert len(parsers) == 6 and all(p.allow_abbrev is False for p in parsers)


def test_max_length_yaml_key_names_both_limits(tmp_path, capsys, no_model_loads):
    """TRL's max_length caps prompt + completion: pointing at max_response_length alone would mislead."""
    from drift.cli import main

    y = tmp_path / "c.yaml"
    y.write_text("max_length: 512\n")
    assert main(["train", "--config", str(y)]) == 2
    err = capsys.readouterr().err
    assert "'max_length': did you mean max_prompt_length and max_response_length? (TRL's max_length caps prompt + " \
           "completion together" in err, err


# --- errors of the environment, interrupts, exit statuses -------------------------------------

def _failing(monkeypatch, exc):
    """Make `drift train` raise ``exc`` (built by the parser at each main() call, so the patch takes)."""
    import drift.cli

    def cmd(args):
        raise exc

    monkeypatch.setattr(drift.cli, "cmd_train", cmd)


@pytest.mark.parametrize("code, says", [
    (errno.ENOSPC, "no space left on device: /runs/r5/iter_1/generations.pt (run folder /runs/r5); free some space"),
    (errno.EDQUOT, "disk quota exceeded: /runs/r5/iter_1/generations.pt (run folder /runs/r5); free some space"),
    (errno.EROFS, "read-only file system: /runs/r5/iter_1/generations.pt (run folder /runs/r5); make it writable"),
    (errno.EACCES, "permission denied: /runs/r5/iter_1/generations.pt (run folder /runs/r5); fix the permissions"),
    (errno.EPERM, "operation not permitted: /runs/r5/iter_1/generations.pt (run folder /runs/r5); fix the"),
    (errno.ENOENT, "no such file or folder (removed during the run?): /runs/r5/iter_1/generations.pt (run folder"),
])
def test_environment_errors_end_in_one_line_with_exit_status_1(code, says, monkeypatch, capsys):
    from drift.cli import main
    from drift.trainer import runlock

    monkeypatch.setattr(runlock, "_last", [Path("/runs/r5")])
    _failing(monkeypatch, OSError(code, os.strerror(code), "/runs/r5/iter_1/generations.pt"))
    assert main(["train", "--output_dir", "/runs/r5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"drift train: error: {says}"), err
    assert err[0].endswith("rerun the same command to resume (finished stages are kept)"), err


def test_output_dir_under_a_file_fails_in_one_line(tiny_model_dir, tiny_data, tmp_path, capsys):
    from drift.cli import main

    (tmp_path / "a_file").write_text("")
    rc = main(["train", "--model_name_or_path", str(tiny_model_dir), "--data", str(tiny_data), "--num_train_examples",
               "8", "--num_eval_examples", "4", "--output_dir", str(tmp_path / "a_file" / "run")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("drift train: error:")]
    assert rc == 1 and len(err) == 1 and f"{tmp_path / 'a_file' / 'run'}" in err[0], err


def test_debug_shows_the_traceback(monkeypatch, capsys):
    from drift.cli import main

    _failing(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/x"))
    with pytest.raises(OSError):
        main(["train", "--debug"])
    with pytest.raises(OSError):
        main(["--debug", "train"])
    monkeypatch.setenv("DRIFT_DEBUG", "1")
    with pytest.raises(OSError):
        main(["train"])
    monkeypatch.setenv("DRIFT_DEBUG", "0")
    assert main(["train"]) == 1


def test_interrupts_and_busy_folder_end_in_one_line(monkeypatch, capsys, tmp_path):
    import signal

    from drift.cli import main
    from drift.trainer.preemption import Preempted
    from drift.trainer.runlock import RunFolderBusy

    cases = [
        (KeyboardInterrupt(), 130, "drift train: interrupted (Ctrl-C); rerun the same command to resume"),
        (Preempted(signal.SIGTERM, "iter_1 step 3 of 4"), 143,
         "drift train: stopped by SIGTERM; the training state was saved after iter_1 step 3 of 4; rerun the same "
         "command to resume"),
        (Preempted(signal.SIGUSR1), 138, "drift train: stopped by SIGUSR1; every finished stage is saved; rerun"),
        (RunFolderBusy(tmp_path, 4242, "node7"), 1, f"drift train: error: output_dir: {tmp_path} is in use by process "
                                                     "4242 on node7"),
    ]
    for exc, status, says in cases:
        _failing(monkeypatch, exc)
        assert main(["train"]) == status
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(says), err


def test_a_bug_still_shows_its_traceback(monkeypatch):
    from drift.cli import main

    _failing(monkeypatch, AttributeError("a bug"))
    with pytest.raises(AttributeError):
        main(["train"])
