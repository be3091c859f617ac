"""Write splits/<task>_<scale>.json: the row ids (0-based positions in the demo set as the trainer reads
it) of the train and held-out examples the trainer's deterministic split picks (``drift.data.load_splits``
cuts ``drift.data.split_order``: first ``num_train_examples`` train, next ``num_eval_examples`` held
out). They are the trainer's input: ``run_all.py`` passes them as ``--split_file`` (the same rows as
the seeded split, which tests/test_experiments.py checks).

    PYTHONPATH=python python experiments/paper_orderings/write_splits.py
"""
import json
from pathlib import Path

from drift import data
from run_all import SCALES, TASKS, counts

HERE = Path(__file__).resolve().parent
DATA_SEED = 0  # matches data_seed in configs/*.yaml

if __name__ == "__main__":
    for task in TASKS:
        spec = data.resolve(task, None, None, None, None)
        n = len(data.read_rows(spec.path, spec.prompt_column, spec.response_column, "data"))
        order = data.split_order(n, DATA_SEED)
        for scale in SCALES:
            nt, ne = counts(scale, task)
            if nt + ne > n:
                print(f"{task} {scale}: needs {nt + ne} rows, set has {n}: skipped")
                continue
            out = {"task": task, "data_seed": DATA_SEED, "rows_in_set": n,
                   "train_ids": order[:nt], "eval_ids": order[nt:nt + ne]}
            (HERE / "splits" / f"{task}_{scale}.json").write_text(json.dumps(out) + "\n")
            print(f"{task} {scale}: {nt} train / {ne} held-out of {n}")
