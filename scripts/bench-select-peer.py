"""scikit-learn peers of Keel's model selection, on the same rows Keel was given.

    python scripts/bench-select-peer.py TRAIN.jsonl TRAIN_EMB.jsonl TEST.jsonl TEST_EMB.jsonl

TRAIN.jsonl / TEST.jsonl: one {"text": ..., "label": ...} per line. *_EMB.jsonl: the same texts,
in the same order, with the MiniLM embedding `keel embed` wrote (field `embedding`).
Peers, each fitted on TRAIN and scored on TEST:
- TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2) + LinearSVC(C=0.5)
- the same features + LogisticRegression(C=10, max_iter=1000)
- LogisticRegression on the embeddings, C chosen from 0.1, 1, 10, 100 by 5-fold
  cross-validation (GridSearchCV), as a careful user would; the embedding time is not counted.
One JSON line per peer: test accuracy and fit seconds. Needs scikit-learn and numpy.
"""
import json
import sys
import time


def read_rows(path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def read_embeddings(path):
    import numpy as np

    return np.asarray([json.loads(line)["embedding"] for line in open(path, encoding="utf-8") if line.strip()],
                      dtype=np.float32)


def main():
    import numpy as np
    import sklearn
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import LinearSVC

    xtr_text, ytr = read_rows(sys.argv[1])
    etr = read_embeddings(sys.argv[2])
    xte_text, yte = read_rows(sys.argv[3])
    ete = read_embeddings(sys.argv[4])
    assert len(etr) == len(ytr) and len(ete) == len(yte), "one embedding per text"
    yte = np.asarray(yte)

    def report(name, fit_seconds, pred):
        print(json.dumps({
            "impl": f"scikit-learn {sklearn.__version__} {name}", "train_rows": len(ytr), "test_rows": len(yte),
            "test_accuracy": round(float(np.mean(np.asarray(pred) == yte)), 4), "fit_seconds": round(fit_seconds, 2),
        }), flush=True)

    for name, make in [("TF-IDF LinearSVC(C=0.5)", lambda: LinearSVC(C=0.5)),
                       ("TF-IDF LogisticRegression(C=10)", lambda: LogisticRegression(C=10, max_iter=1000))]:
        t0 = time.perf_counter()
        vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
        clf = make().fit(vec.fit_transform(xtr_text), ytr)
        t1 = time.perf_counter()
        report(name, t1 - t0, clf.predict(vec.transform(xte_text)))

    t0 = time.perf_counter()
    grid = GridSearchCV(LogisticRegression(max_iter=2000), {"C": [0.1, 1, 10, 100]}, cv=5).fit(etr, ytr)
    t1 = time.perf_counter()
    report(f"MiniLM embeddings LogisticRegression(C={grid.best_params_['C']} by 5-fold CV)", t1 - t0, grid.predict(ete))


if __name__ == "__main__":
    main()
