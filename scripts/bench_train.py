"""Helpers for scripts/bench-train: Orange .tab -> JSONL, and scikit-learn's LogisticRegression
on the embeddings Keel computed.

    python bench_train.py prep FILE.tab OUT.jsonl        # {"text", "label"} per line
    python bench_train.py sklearn TRAIN.jsonl TEST.jsonl # embeddings + labels -> accuracy, fit time

TRAIN/TEST for `sklearn` are the files `lr_bench` reads too: one JSON object per line with
"text", "label" and "embedding".
"""
import json
import sys
import time


def prep(tab, out):
    n = 0
    with open(tab, encoding="utf-8") as f, open(out + ".partial", "w", encoding="utf-8") as o:
        header = f.readline().rstrip("\n").split("\t")
        f.readline()  # type row
        f.readline()  # flags row
        ci, ti = header.index("Category"), header.index("Text")
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) <= max(ci, ti):
                continue
            o.write(json.dumps({"text": cols[ti], "label": cols[ci]}) + "\n")
            n += 1
    import os

    os.replace(out + ".partial", out)
    print(f"{tab}: {n} rows -> {out}", file=sys.stderr)


def load(path):
    import numpy as np

    xs, ys = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            xs.append(r["embedding"])
            ys.append(r["label"])
    return np.asarray(xs, dtype=np.float32), np.asarray(ys)


def sklearn_lr(train, test):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = load(train)
    xte, yte = load(test)
    # Keel's default l2 = 1e-4 is 1/(C n) for the multinomial model, i.e. C = 1/(1e-4 n).
    c = 1.0 / (1e-4 * len(ytr))
    clf = LogisticRegression(C=c, tol=1e-6, max_iter=1000)
    t0 = time.perf_counter()
    clf.fit(xtr, ytr)
    fit_s = time.perf_counter() - t0
    acc = float(np.mean(clf.predict(xte) == yte))
    # The minimised objective in Keel's scale (mean log loss + (l2/2)·||W||²), to compare optima.
    p = clf.predict_proba(xtr)[np.arange(len(ytr)), np.searchsorted(clf.classes_, ytr)]
    objective = float(-np.mean(np.log(p)) + 0.5 * 1e-4 * np.sum(clf.coef_.astype(np.float64) ** 2))
    from threadpoolctl import threadpool_info

    blas = max((p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"), default=None)
    print(json.dumps({"impl": "scikit-learn", "blas_threads": blas, "train_rows": len(ytr), "test_rows": len(yte), "C": c,
                      "test_accuracy": acc, "fit_seconds": fit_s, "iterations": int(np.max(clf.n_iter_)),
                      "final_loss": objective}))


def summary(name, log):
    """One line per data set: each side's accuracy, median and fastest fit over the rounds, and
    Keel's speed as a ratio of each scikit-learn setting's (above 1: Keel faster)."""
    import statistics

    runs = {}
    for line in open(log):
        d = json.loads(line)
        key = "keel" if d["impl"] == "keel" else f"sklearn_blas{d['blas_threads']}"
        runs.setdefault(key, []).append(d)
    out = {"dataset": name, "rounds": len(runs.get("keel", []))}
    for key, rs in runs.items():
        fits = [r["fit_seconds"] for r in rs]
        out[key] = {"test_accuracy": rs[0]["test_accuracy"], "median_fit_seconds": round(statistics.median(fits), 3),
                    "fastest_fit_seconds": round(min(fits), 3), "fits": [round(f, 3) for f in fits]}
    keel = out.get("keel")
    if keel:
        for key in [k for k in runs if k != "keel"]:
            out[f"speedup_vs_{key}_median"] = round(out[key]["median_fit_seconds"] / keel["median_fit_seconds"], 2)
    print(json.dumps({"summary": out}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "prep":
        prep(sys.argv[2], sys.argv[3])
    elif cmd == "sklearn":
        sklearn_lr(sys.argv[2], sys.argv[3])
    elif cmd == "summary":
        summary(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
