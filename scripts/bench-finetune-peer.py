"""SetFit, the Python peer of `keel train --fine-tune setfit`: the same base model files, the same
training examples, the same number of pairs (as optimiser steps of 16 pairs), one epoch, two
threads; a logistic-regression head as SetFit's default. Prints one JSON line: test accuracy and
the wall time of `trainer.train()` (body fine-tuning and head fit).

    python bench-finetune-peer.py MODEL_DIR TRAIN_CSV TEST_CSV STEPS SEED
"""

import csv
import json
import shutil
import sys
import tempfile
import time

import torch

torch.set_num_threads(2)

from datasets import Dataset  # noqa: E402
from setfit import SetFitModel, Trainer, TrainingArguments  # noqa: E402


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        data = list(csv.DictReader(f))
    return {"text": [r["text"] for r in data], "label": [r["label"] for r in data]}


def main():
    model_dir, train_csv, test_csv, steps, seed = sys.argv[1:6]
    steps, seed = int(steps), int(seed)
    train, test = rows(train_csv), rows(test_csv)
    labels = sorted(set(train["label"]))
    index = {l: i for i, l in enumerate(labels)}
    train_ds = Dataset.from_dict({"text": train["text"], "label": [index[l] for l in train["label"]]})
    model = SetFitModel.from_pretrained(model_dir)
    # No checkpoints: SetFit would write them under the working directory.
    scratch = tempfile.mkdtemp(prefix="setfit-")
    args = TrainingArguments(
        output_dir=scratch, batch_size=16, num_epochs=1, max_steps=steps, seed=seed, report_to="none", save_strategy="no"
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    pred = model.predict(test["text"], batch_size=32)
    pred = [int(p) for p in pred]
    correct = sum(1 for p, l in zip(pred, test["label"]) if labels[p] == l)
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"impl": "SetFit", "test_accuracy": correct / len(test["label"]), "fit_seconds": seconds}))


if __name__ == "__main__":
    main()
