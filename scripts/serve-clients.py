"""Checks a running `keel serve` with the official clients: OpenAI's Python client
(embeddings.create, float and base64) and prometheus_client's text-format parsers.

    python scripts/serve-clients.py http://127.0.0.1:PORT

Exits non-zero with the failed check on stderr. Used by the binary's test suite
(crates/keel/tests/it/serve_clients.rs), which installs both packages from PyPI into a venv.
"""

import math
import sys
import urllib.request

import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")


base = sys.argv[1].rstrip("/")
client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)

texts = ["The quick brown fox jumps over the lazy dog.", "ünïcödé and emoji 🙂", ""]
# The client asks for base64 by default and decodes it; ask for floats explicitly too.
for fmt in (None, "float"):
    kwargs = {} if fmt is None else {"encoding_format": fmt}
    resp = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, **kwargs)
    check(len(resp.data) == len(texts), f"{fmt}: one embedding per input")
    for i, item in enumerate(resp.data):
        check(item.index == i, f"{fmt}: indices in order")
        check(len(item.embedding) == 384, f"{fmt}: 384 dimensions, got {len(item.embedding)}")
        norm = math.sqrt(sum(x * x for x in item.embedding))
        check(abs(norm - 1.0) < 1e-3, f"{fmt}: unit length, got {norm}")
    check(resp.usage.prompt_tokens > 0, f"{fmt}: usage counts tokens")
    check(resp.model == "all-MiniLM-L6-v2", f"{fmt}: model echoed")
    if fmt is None:
        first = resp.data[0].embedding
    else:
        cos = sum(a * b for a, b in zip(first, resp.data[0].embedding))
        check(cos > 0.99999, f"base64 and float agree, cosine {cos}")
single = client.embeddings.create(model="all-MiniLM-L6-v2", input="one string")
check(len(single.data) == 1, "a single string input")

try:
    client.embeddings.create(model="all-MiniLM-L6-v2", input=[[1, 2, 3]])
    sys.exit("FAILED: token-id input should be refused")
except openai.UnprocessableEntityError:
    pass


def get(path, accept=None):
    req = urllib.request.Request(base + path, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.headers.get("Content-Type", ""), r.read().decode()


ctype, text = get("/metrics")
check(ctype.startswith("text/plain; version=0.0.4"), f"Prometheus text content type, got {ctype}")
families = {f.name: f for f in parse_prometheus(text)}
requests = families.get("keel_http_requests")
check(requests is not None and requests.type == "counter", f"keel_http_requests is a counter: {sorted(families)}")
ok = [s for s in requests.samples if s.labels.get("route") == "/v1/embeddings" and s.labels.get("status") == "200"]
check(ok and ok[0].value == 3, f"three embeddings requests counted: {requests.samples}")
refused = [s for s in requests.samples if s.labels.get("route") == "/v1/embeddings" and s.labels.get("status") == "422"]
check(refused and refused[0].value == 1, "the refused request counted as 422")
latency = families.get("keel_http_request_duration_seconds")
check(latency is not None and latency.type == "histogram", "latency is a histogram")
check(families["keel_encoder_queue_depth"].type == "gauge", "queue depth is a gauge")
check(families["keel_encoder_batch_size"].type == "histogram", "batch sizes are a histogram")
# No model is loaded in this test, so the model-info gauge has no sample (and the text parser
# then yields no family for it); when it is there it must be a gauge.
info = families.get("keel_model_info")
check(info is None or info.type == "gauge", "model info is a gauge")
untyped = [f.name for f in families.values() if f.type in ("untyped", "unknown")]
check(not untyped, f"every family has its type: {untyped}")

ctype, text = get("/metrics", accept="application/openmetrics-text; version=1.0.0")
check(ctype.startswith("application/openmetrics-text"), f"OpenMetrics content type, got {ctype}")
om = {f.name: f for f in parse_openmetrics(text)}
check(om["keel_http_requests"].type == "counter", "OpenMetrics counter")
check(set(om) == set(families), f"both formats carry the same families: {set(om) ^ set(families)}")
print(f"ok: openai {openai.__version__}, {len(families)} metric families parsed in both formats")
