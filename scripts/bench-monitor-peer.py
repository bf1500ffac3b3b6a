"""Evidently on the same reference and window as `keel monitor` (scripts/bench-monitor).

Reads the files `keel monitor --export DIR` writes: DIR/reference.csv (the profile's per-row
statistics and predicted classes), DIR/reference_embeddings.csv (the profile's projected sample)
and DIR/current.csv (the window). Runs Evidently's legacy Report with DatasetDriftMetric
(per-column default stat tests, drift_share 0.5) and EmbeddingsDriftMetric on the 17 projection
features (default method: domain classifier, ROC-AUC > 0.55), and prints one JSON line with
timings and results.
"""
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")
t_import = time.perf_counter()
import pandas as pd  # noqa: E402
from evidently.legacy.metrics import DatasetDriftMetric, EmbeddingsDriftMetric  # noqa: E402
from evidently.legacy.pipeline.column_mapping import ColumnMapping  # noqa: E402
from evidently.legacy.report import Report  # noqa: E402

import_s = time.perf_counter() - t_import
d = sys.argv[1]
start = time.perf_counter()
ref = pd.read_csv(f"{d}/reference.csv")
ref_emb = pd.read_csv(f"{d}/reference_embeddings.csv")
cur = pd.read_csv(f"{d}/current.csv")
read_s = time.perf_counter() - start
numeric = ["text_chars", "text_tokens", "oov_rate", "confidence"]
features = [c for c in ref_emb.columns if c.startswith("f")]
mapping = ColumnMapping(numerical_features=numeric, categorical_features=["predicted_class"])
emb_mapping = ColumnMapping(numerical_features=[], categorical_features=[], embeddings={"emb": features})
t0 = time.perf_counter()
cols = Report(metrics=[DatasetDriftMetric(columns=numeric + ["predicted_class"])])
cols.run(reference_data=ref, current_data=cur, column_mapping=mapping)
col_res = cols.as_dict()["metrics"][0]["result"]
columns_s = time.perf_counter() - t0
t1 = time.perf_counter()
emb = Report(metrics=[EmbeddingsDriftMetric("emb")])
emb.run(reference_data=ref_emb, current_data=cur[features], column_mapping=emb_mapping)
emb_res = emb.as_dict()["metrics"][0]["result"]
embedding_s = time.perf_counter() - t1
print(
    json.dumps(
        {
            "tool": "evidently",
            "reference_rows": len(ref),
            "reference_embedding_rows": len(ref_emb),
            "current_rows": len(cur),
            "import_s": round(import_s, 3),
            "read_s": round(read_s, 3),
            "columns_s": round(columns_s, 3),
            "embedding_s": round(embedding_s, 3),
            "compute_s": round(columns_s + embedding_s, 3),
            "total_s": round(time.perf_counter() - start, 3),
            "dataset_drift": col_res["dataset_drift"],
            "drifted_columns": col_res["number_of_drifted_columns"],
            "domain_auc": emb_res["drift_score"],
            "embedding_drift": emb_res["drift_detected"],
        }
    )
)
