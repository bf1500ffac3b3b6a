"""The Python peer for scripts/bench-serve: sentence-transformers behind FastAPI + uvicorn,
answering the same OpenAI-shaped POST /v1/embeddings as `keel serve`.

    python scripts/bench-serve-peer.py MODEL_DIR PORT

MODEL_DIR holds the same all-MiniLM-L6-v2 files Keel loads (config.json, tokenizer.json,
model.safetensors). One uvicorn worker, PyTorch on 2 threads; each request is encoded as it
comes (FastAPI runs the sync handler in its thread pool), as a typical deployment does.
"""

import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

torch.set_num_threads(2)
model_dir, port = sys.argv[1], int(sys.argv[2])
model = SentenceTransformer(model_dir, device="cpu")
app = FastAPI()


class EmbeddingsRequest(BaseModel):
    input: str | list[str]
    model: str | None = None


@app.post("/v1/embeddings")
def embeddings(req: EmbeddingsRequest):
    texts = [req.input] if isinstance(req.input, str) else req.input
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
        "model": req.model or "all-MiniLM-L6-v2",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
