#!/usr/bin/env python3
"""Peer measurement: Chroma (single node, HTTP) on the very vectors engram stored.

Run after `engram-bench load` against the same data directory, while engram is
still serving (query embeddings come from engram's /v1/embeddings, i.e. the same
model). Starts `chroma run` on its own port and data folder, loads the vectors,
and reports insert throughput and query latency at concurrency 1:
  * ANN only (query embedding precomputed), and
  * query embedding included (one /v1/embeddings call + the Chroma query),
the latter being what engram's own search latency includes.

Usage: bench/chroma_peer.py --db DATA/engram.db --namespace bench --engram http://127.0.0.1:8080
Needs: a venv with `pip install chromadb` (see BENCHMARKS.md).
"""
import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.request

import numpy as np
import chromadb


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def pct(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)]


def summary(ms):
    return f"p50 {pct(ms, .5):.2f} ms, p95 {pct(ms, .95):.2f} ms, p99 {pct(ms, .99):.2f} ms (n={len(ms)})"


NAMES = ["Alice", "Bob", "Carol", "Dmitri", "Esha", "Farid", "Grace", "Hiro"]
TOPICS = ["the billing service", "the Kubernetes cluster", "our vLLM deployment", "the onboarding flow",
          "the GPU budget", "the API gateway", "the nightly backups", "the search ranking"]
DETAILS = ["a flaky integration test", "the new caching layer", "an expired TLS certificate",
           "the PostgreSQL upgrade", "a memory leak in the worker", "the vendor contract"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--namespace", default="bench")
    ap.add_argument("--engram", default="http://127.0.0.1:8080")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    con = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT id, vector FROM memories WHERE namespace = ? AND vector IS NOT NULL AND deleted_at IS NULL",
        (args.namespace,),
    ).fetchall()
    ids = [r[0] for r in rows]
    vecs = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows])
    print(f"# Chroma peer: {len(ids)} vectors of dim {vecs.shape[1]} from {args.db}")

    path = tempfile.mkdtemp(prefix="chroma-peer-")
    chroma_bin = shutil.which("chroma")
    server = subprocess.Popen([chroma_bin, "run", "--path", path, "--port", str(args.port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        for _ in range(300):
            try:
                client = chromadb.HttpClient(host="127.0.0.1", port=args.port)
                client.heartbeat()
                break
            except Exception:
                time.sleep(0.2)
        col = client.create_collection("peer", metadata={"hnsw:space": "cosine"}, embedding_function=None)
        # Insert: batches of 32 timed individually (the anchor's unit), then the rest in bulk.
        b32 = []
        n32 = min(len(ids), 32 * 50)
        for i in range(0, n32, 32):
            t = time.perf_counter()
            col.add(ids=ids[i:i + 32], embeddings=vecs[i:i + 32])
            b32.append((time.perf_counter() - t) * 1e3)
        t0 = time.perf_counter()
        for i in range(n32, len(ids), 1000):
            col.add(ids=ids[i:i + 1000], embeddings=vecs[i:i + 1000])
        bulk = time.perf_counter() - t0
        rest = len(ids) - n32
        print(f"insert batch of 32 (precomputed vectors): mean {sum(b32) / len(b32):.1f} ms, {summary(b32)}")
        if rest:
            print(f"bulk insert: {rest} vectors in {bulk:.1f}s → {rest / bulk:.0f} vectors/s (no embedding)")

        rnd = random.Random(11)
        queries = [f"{rnd.choice(NAMES)} said {rnd.choice(TOPICS)} depends on {rnd.choice(DETAILS)} #{i}"
                   for i in range(args.queries)]
        qv = []
        for i in range(0, len(queries), 64):
            out = post(f"{args.engram}/v1/embeddings", {"input": queries[i:i + 64]})
            qv.extend(d["embedding"] for d in out["data"])
        ann = []
        for v in qv:
            t = time.perf_counter()
            col.query(query_embeddings=[v], n_results=args.k)
            ann.append((time.perf_counter() - t) * 1e3)
        print(f"query k={args.k} ANN only, concurrency 1: {summary(ann)}")
        e2e = []
        for q in queries:
            t = time.perf_counter()
            v = post(f"{args.engram}/v1/embeddings", {"input": q + " (e2e)"})["data"][0]["embedding"]
            col.query(query_embeddings=[v], n_results=args.k)
            e2e.append((time.perf_counter() - t) * 1e3)
        print(f"query k={args.k} with query embedding (engram /v1/embeddings + Chroma), concurrency 1: {summary(e2e)}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
