"""`drift plot` and what runs log for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TRAIN_DEPS, tiny_config

pytestmark = pytest.mark.skipif(not TRAIN_DEPS, reason="needs the train extras (transformers, accelerate, ...)")


def _fake_run(d: Path, name: str, iterations, warm: bool = False) -> Path:
    d.mkdir(parents=True)
    recs = []
    for k in iterations:
        rec = {"kind": "iteration", "iteration": k, "stage": f"iter_{k}", "method": name, "run": name,
               "rouge1": 20.0 + k, "rouge2": 3.0 + k, "rougeL": 15.0 + k, "global_step": 4 * max(k, 0)}
        if k >= 1:
            rec["gamma"] = 0.2
        if k == 0 and warm:
            rec["kind_of_stage"] = "sft"
        recs.append(rec)
        if k >= 0:
            recs += [{"kind": "step", "iteration": k, "step": s, "global_step": 4 * k + s, "loss": 0.7 - 0.01 * s,
                      "rewards/margins": 0.01 * s} for s in range(1, 5)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def _figure(runs, metric="all"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drift import plot

    if metric == "loss":
        return plt, plot._loss_figure(plt, runs)
    return plt, plot._rouge_figure(plt, runs, list(plot.METRICS))


@pytest.mark.parametrize("suffix,magic", [(".pdf", b"%PDF"), (".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_output_format_follows_the_file_name(tmp_path, suffix, magic):
    from drift.cli import main

    run = _fake_run(tmp_path / "a", "drift", [1])
    out = tmp_path / f"fig{suffix}"
    assert main(["plot", str(run), "--output", str(out)]) == 0
    assert out.read_bytes()[:len(magic)] == magic
    assert main(["plot", str(run), "--output", str(tmp_path / "fig.jpeg")]) == 2


def test_one_stage_run_has_whole_iteration_ticks_and_no_warm_start_label(tmp_path):
    plt, fig = _figure([_fake_run(tmp_path / "a", "drift", [1])])
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [1.0]
    assert "SFT" not in ax.get_xlabel() and "base" not in ax.get_xlabel()
    plt.close(fig)
    plt, fig = _figure([_fake_run(tmp_path / "b", "drift", [-1, 0, 1, 2], warm=True)])
    assert list(fig.axes[0].get_xticks()) == [-1.0, 0.0, 1.0, 2.0]
    assert "0: SFT warm start" in fig.axes[0].get_xlabel() and "-1: base" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_six_run_legend_sits_outside_the_panels(tmp_path):
    runs = [_fake_run(tmp_path / f"r{i}", f"run{i}", [-1, 1, 2, 3]) for i in range(6)]
    plt, fig = _figure(runs)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    fig.canvas.draw()
    legend_top = fig.legends[0].get_window_extent().y1
    assert all(ax.get_window_extent().y0 >= legend_top - 1 for ax in fig.axes)
    plt.close(fig)


def test_loss_curve_plot(tmp_path):
    from drift.cli import main

    runs = [_fake_run(tmp_path / "a", "drift", [1, 2]), _fake_run(tmp_path / "b", "spin", [1, 2])]
    out = tmp_path / "loss.png"
    assert main(["plot", *map(str, runs), "--metric", "loss", "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    plt, fig = _figure(runs, "loss")
    assert [len(line.get_xdata()) for line in fig.axes[0].get_lines()] == [8, 8]
    plt.close(fig)


def test_logs_name_the_warm_start_omit_uncomputed_oal_and_eval_keeps_prompts(tiny_model_dir, tiny_data, tmp_path):
    from drift.trainer import train

    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", method="spin", sft_warmup_epochs=1))
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    assert {r["method"] for r in steps if r["iteration"] == 0} == {"sft"}
    assert {r["method"] for r in steps if r["iteration"] == 1} == {"spin"}
    assert not any("oal_loss" in r for r in steps)
    ev = json.loads((tmp_path / "run" / "iter_1" / "eval.json").read_text())
    assert len(ev["prompts"]) == len(ev["references"]) == len(ev["predictions"]) == 4
    rows = [json.loads(x) for x in tiny_data.read_text().splitlines()]
    assert set(ev["references"]) <= {r["response"] for r in rows} and set(ev["prompts"]) <= {r["prompt"] for r in rows}


def test_diagnostics_plot_draws_difference_vs_lcs_and_recall(tmp_path):
    """--metric diagnostics: per run, difference (solid) and LCS (dashed) log-probs, recall and
    precision per iteration from the diag_* records; a run without them is a clear error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drift import plot
    from drift.cli import main

    run = _fake_run(tmp_path / "a", "drift", [0, 1, 2])
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in recs:
        if r["kind"] == "iteration":
            k = r["iteration"]
            r.update(diag_logp_difference=-5.0 + k, diag_logp_lcs=-2.0, diag_vocab_recall=0.3 + 0.1 * k,
                     diag_vocab_precision=0.5)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    fig = plot._diagnostics_figure(plt, [run])
    solid, dashed = fig.axes[0].lines[:2]
    assert list(solid.get_ydata()) == [-5.0, -4.0, -3.0] and list(dashed.get_ydata()) == [-2.0] * 3
    assert list(fig.axes[1].lines[0].get_ydata()) == pytest.approx([0.3, 0.4, 0.5])
    plt.close(fig)
    assert main(["plot", str(run), "--metric", "diagnostics", "--output", str(tmp_path / "d.png")]) == 0
    bare = _fake_run(tmp_path / "b", "spin", [1])
    assert main(["plot", str(bare), "--metric", "diagnostics", "--output", str(tmp_path / "e.png")]) == 2
