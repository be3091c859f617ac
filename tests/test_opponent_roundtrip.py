"""drift's own answers fed back as opponent_generations reproduce its iteration exactly.

``drift generate --split train`` writes, per answer, whether it ended with EOS or was cut at
max_new_tokens, and its token ids; the opponent_generations reader honours both, so a run
trained from that file generates nothing and trains exactly as the run that generated.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_records, tiny_config, untimed

SEED = 3  # tiny_config's


def _answers(run_dir):
    from drift.trainer.layout import RunLayout

    return torch.load(RunLayout(run_dir).generations(1), weights_only=False)["ids"]


@pytest.mark.parametrize("case", ["cut", "ended", "sampled"])
def test_own_generations_fed_back_reproduce_the_iteration(case, tiny_model_dir, tiny_data, tmp_path, tok):
    """cut: the tiny model's greedy answers all run into max_new_tokens (newlines, which the text drops);
    ended: after an SFT warm-up every answer ends with EOS; sampled: iteration 1 samples with seed + 1."""
    from drift.cli import main
    from drift.trainer import train

    kw = dict(method="spin", eval_metric="none")
    gen_args = ["--model", str(tiny_model_dir), "--config", str(tmp_path / "a" / "config.json")]
    if case == "ended":
        kw.update(sft_warmup_epochs=3, learning_rate=1e-2, max_new_tokens=12)
        gen_args = ["--model", str(tmp_path / "a" / "iter_0" / "model")]  # a model inside the run: its config
    if case == "sampled":
        kw.update(do_sample=True)
        gen_args += ["--seed", str(SEED + 1)]
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "a", **kw))
    gens = tmp_path / "gens.jsonl"
    assert main(["generate", *gen_args, "--split", "train", "--output", str(gens)]) == 0
    train(tiny_config(tiny_model_dir, tiny_data, tmp_path / "b", opponent_generations=str(gens), **kw))

    first, again = _answers(tmp_path / "a"), _answers(tmp_path / "b")
    ended = [bool(g) and g[-1] == tok.eos_token_id for g in first]
    assert sum(ended) == (8 if case == "ended" else 0)
    assert again == first  # the very token ids, EOS where there was one and only there
    assert untimed(run_records(tmp_path / "b")) == untimed(run_records(tmp_path / "a"))  # SPIN losses, rewards, gamma
    # the text alone (re-tokenized, EOS appended: the reader without the new fields) would not reproduce the cut
    # and sampled answers (the ended ones here are EOS alone, which the text does carry)
    texts = [json.loads(line)["generation"] for line in gens.read_text().splitlines()]
    from_text = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    assert (from_text == first) == (case == "ended")


@pytest.fixture
def tok(tiny_model_dir):
    from drift.trainer.examples import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def _read(tmp_path, records, tok):
    from drift.trainer.generation import provided_generations
    from drift.trainer.examples import Example

    path = tmp_path / "gens.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", **r}) + "\n" for i, r in enumerate(records)))
    pairs = [Example([], [], "", prompt_text=f"p{i}") for i in range(len(records))]
    return provided_generations(path, pairs, tok)


def test_reader_honours_ended_and_ids(tmp_path, tok):
    eos = tok.eos_token_id
    canonical = tok("the cat sat", add_special_tokens=False)["input_ids"]
    spelled = [t for ch in "the cat sat" for t in tok(ch, add_special_tokens=False)["input_ids"]]  # not canonical
    assert spelled != canonical and tok.decode(spelled) == "the cat sat"
    got = _read(tmp_path, [
        {"generation": "the cat sat"},  # no fields: finished, as text (the behaviour before the fields)
        {"generation": "the cat sat", "ended": True},
        {"generation": "the cat sat", "ended": False},  # cut: no EOS
        {"generation": "the cat sat", "ended": False, "generation_ids": spelled},  # the ids, not the text's split
        {"generation": "the cat sat", "ended": True, "generation_ids": spelled},
        {"generation": "", "ended": True, "generation_ids": []},  # an answer that is EOS alone
    ], tok)
    assert got == [canonical + [eos], canonical + [eos], canonical, spelled, spelled + [eos], [eos]]


@pytest.mark.parametrize("ids", [[], [1], [0, 198, 198], [504, 2541, 1], [3, 9, 49151, 17, 17]])
@pytest.mark.parametrize("ended", [False, True])
def test_written_answer_reads_back_as_the_same_ids(ids, ended, tmp_path, tok):
    """What drift generate writes for an answer (answer_record) reads back as exactly its ids,
    special tokens (dropped from the text) included."""
    from drift.trainer.generation import answer_record

    answer = ids + ([tok.eos_token_id] if ended else [])
    rec = answer_record(answer, tok)
    assert rec["ended"] is ended and rec["generation_ids"] == ids
    assert _read(tmp_path, [json.loads(json.dumps(rec))], tok) == [answer]


@pytest.mark.parametrize("rec, match", [
    ({"generation": "x", "ended": "yes"}, "line 1: 'ended' must be true or false"),
    ({"generation": "x", "generation_ids": "87"}, "line 1: 'generation_ids' must be a list of token ids"),
    ({"generation": "x", "generation_ids": [10 ** 9]}, "line 1: 'generation_ids' must be a list of token ids"),
    ({"generation": "x", "generation_ids": [True]}, "line 1: 'generation_ids' must be a list of token ids"),
    ({"generation": "x", "generation_ids": [87, 2]}, "line 1: 'generation_ids' holds EOS"),
    ({"generation": "the dog", "generation_ids": None}, None),
    ({"generation": "the dog", "generation_ids": [1000]}, "line 1: 'generation_ids' do not decode to 'generation'"),
])
def test_reader_refuses_bad_fields(rec, match, tmp_path, tok):
    assert tok.eos_token_id == 2  # the id the cases above use for EOS
    if match is None:  # null ids: the text is used
        assert _read(tmp_path, [rec], tok) == [tok("the dog", add_special_tokens=False)["input_ids"] + [2]]
        return
    with pytest.raises(ValueError, match=match):
        _read(tmp_path, [rec], tok)


def test_answer_record_refuses_non_ids(tok):
    from drift.trainer.generation import answer_record

    with pytest.raises(TypeError, match="ids: expected a list of int token ids"):
        answer_record(torch.tensor([1, 2]), tok)
