"""Fill a real Chroma server (`chroma run`) with a collection as users have
them, through the official `chromadb` client, for `engram import
--from-chroma` (run by tests/clients.rs). Writes what engram must end up
with to EXPECTED (a JSON object: Chroma id -> {"text", "metadata"}) and the
ids it must leave out; prints `ok`.

Env: CHROMA_PORT, RECORDS, EXPECTED."""

import json
import os
import random

import chromadb

port = int(os.environ["CHROMA_PORT"])
n = int(os.environ["RECORDS"])
rng = random.Random(7)
words = "harbour ledger violet quarry falcon meadow copper lantern summit orchard cobalt ember".split()

client = chromadb.HttpClient(host="127.0.0.1", port=port)
# Vectors supplied, as from an application's own embedder: no embedding
# function runs (and nothing is downloaded).
col = client.create_collection("notes", embedding_function=None, metadata={"owner": "tests"})

ids, documents, metadatas, embeddings = [], [], [], []
expected, left_out = {}, []
for i in range(n):
    rid = f"rec-{i:05d}"
    text = f"Record {i}: the {rng.choice(words)} {rng.choice(words)} near {rng.choice(words)} {i * 7919 % 10007}"
    # Chroma metadata of every type it stores, odd keys included; some
    # records have none.
    meta = None
    if i % 3 == 0:
        meta = {"page": i, "score": i / 8, "draft": i % 2 == 0, "source": f"doc-{i // 50}.pdf"}
    elif i % 3 == 1:
        meta = {"ключ": "значение ✓", "with space": "yes", "a.b": 1.5, "empty": ""}
    document = text
    if i % 200 == 199:
        document = None  # a vector without a document: nothing to remember
    ids.append(rid)
    documents.append(document)
    metadatas.append(meta)
    embeddings.append([rng.uniform(-1, 1) for _ in range(8)])
    if document is None:
        left_out.append(rid)
    else:
        want = dict(meta or {})
        if "a.b" in want:
            # engram's keys hold no dots: dotted keys nest.
            want["a"] = {"b": want.pop("a.b")}
        expected[rid] = {"text": text, "metadata": want}

# One record engram must refuse (metadata over its 64 KiB limit): the
# import names it and goes on with the rest.
ids.append("too-big")
documents.append("A record with an oversized metadata value")
metadatas.append({"blob": "x" * (70 * 1024)})
embeddings.append([0.0] * 8)
# And one whose keys cannot nest ("x" is a value and a parent).
ids.append("bad-keys")
documents.append("A record whose metadata keys clash once nested")
metadatas.append({"x": 1, "x.y": 2})
embeddings.append([0.0] * 8)

for start in range(0, len(ids), 500):
    end = start + 500
    col.add(
        ids=ids[start:end],
        documents=documents[start:end],
        metadatas=metadatas[start:end],
        embeddings=embeddings[start:end],
    )
assert col.count() == n + 2, col.count()

with open(os.environ["EXPECTED"], "w") as f:
    json.dump({"memories": expected, "left_out": left_out, "rejected": ["too-big", "bad-keys"]}, f)
print("ok")
