"""engram's OpenAI-compatible routes, driven by the official `openai` package
exactly as an application would use it. Run by tests/clients.rs against a real
`engram serve`; exits non-zero (with a traceback) on the first failed check.

Environment: ENGRAM_URL (the node), ENGRAM_API_KEY (a reader key).
"""

import math
import os

import openai
from openai import OpenAI

url = os.environ["ENGRAM_URL"]
client = OpenAI(base_url=f"{url}/v1", api_key=os.environ["ENGRAM_API_KEY"], max_retries=0)
MODEL = "all-MiniLM-L6-v2"

# The client's default request: encoding_format "base64", decoded by the client.
texts = ["a cat sits on the mat", "a cat is sitting on a mat", "quarterly revenue grew"]
r = client.embeddings.create(model=MODEL, input=texts)
assert r.model == MODEL, r.model
assert [d.index for d in r.data] == [0, 1, 2]
vecs = [d.embedding for d in r.data]
assert all(len(v) == 384 for v in vecs), [len(v) for v in vecs]
dot = lambda a, b: sum(x * y for x, y in zip(a, b))
assert abs(dot(vecs[0], vecs[0]) - 1.0) < 1e-3
assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2]) + 0.3

# Floats on request: the same vector.
f = client.embeddings.create(model=MODEL, input=texts[0], encoding_format="float")
assert max(abs(a - b) for a, b in zip(f.data[0].embedding, vecs[0])) < 1e-6

# The model's own dimensions are accepted; others are refused clearly.
client.embeddings.create(model=MODEL, input="x", dimensions=384)
try:
    client.embeddings.create(model=MODEL, input="x", dimensions=256)
    raise AssertionError("dimensions=256 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400
    assert e.body["code"] == "invalid_request", e.body
    assert "384" in e.body["message"], e.body

try:
    client.embeddings.create(model="text-embedding-3-small", input="x")
    raise AssertionError("another model was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400

# The model list names the embedding model.
ids = [m.id for m in client.models.list()]
assert MODEL in ids, ids

# A wrong key is the client's AuthenticationError.
bad = OpenAI(base_url=f"{url}/v1", api_key="egk_wrong", max_retries=0)
try:
    bad.models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401

assert not math.isnan(vecs[0][0])
print("ok")
