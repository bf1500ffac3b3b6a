"""scikit-learn's TF-IDF linear classifiers on an Orange .tab text data set, the peers of
keel-train's `sparse_bench` example (same files, same split: fit on TRAIN, score on TEST).

    python scripts/bench-sparse-peer.py TRAIN.tab TEST.tab [svc|lr|all]

Features: TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2). Classifiers:
LinearSVC(C=0.5) and LogisticRegression(C=10, max_iter=1000) (lbfgs, multinomial; C=1, the
default, underfits TF-IDF rows). One JSON line per classifier: test accuracy, fit seconds
(vectorise + fit on TRAIN), predict seconds (transform + predict on TEST), vocabulary size.
Needs scikit-learn (`pip install scikit-learn`).
"""
import json
import sys
import time


def read_tab(path):
    """Orange .tab: a header row of names, a type row and a flags row, then TSV rows."""
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        f.readline()
        f.readline()
        ci, ti = header.index("Category"), header.index("Text")
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) <= max(ci, ti):
                continue
            texts.append(cols[ti])
            labels.append(cols[ci])
    return texts, labels


def main():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC
    import numpy as np
    import sklearn

    train, test = sys.argv[1], sys.argv[2]
    which = sys.argv[3] if len(sys.argv) > 3 else "all"
    xtr_text, ytr = read_tab(train)
    xte_text, yte = read_tab(test)
    models = []
    if which in ("svc", "all"):
        models.append(("LinearSVC(C=0.5)", lambda: LinearSVC(C=0.5)))
    if which in ("lr", "all"):
        models.append(("LogisticRegression(C=10)", lambda: LogisticRegression(C=10, max_iter=1000)))
    for name, make in models:
        t0 = time.perf_counter()
        vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
        xtr = vec.fit_transform(xtr_text)
        t1 = time.perf_counter()
        clf = make().fit(xtr, ytr)
        t2 = time.perf_counter()
        pred = clf.predict(vec.transform(xte_text))
        t3 = time.perf_counter()
        print(json.dumps({
            "impl": f"scikit-learn {sklearn.__version__} {name}", "data": train.rsplit("/", 1)[-1],
            "train_rows": len(ytr), "test_rows": len(yte), "vocabulary": len(vec.vocabulary_),
            "test_accuracy": round(float(np.mean(pred == np.asarray(yte))), 4),
            "vectorise_seconds": round(t1 - t0, 3), "fit_seconds": round(t2 - t0, 3),
            "predict_seconds": round(t3 - t2, 3), "predict_us_per_text": round((t3 - t2) * 1e6 / len(yte), 1),
        }), flush=True)


if __name__ == "__main__":
    main()
