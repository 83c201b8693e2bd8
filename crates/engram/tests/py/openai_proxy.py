"""The memory proxy (/v1/chat/completions) driven by the official `openai`
package, as Open WebUI or an agent framework would: engram adds the
namespace's memories to the prompt and forwards to the real llama.cpp
server of the test suite. Run by tests/clients.rs; exits non-zero on the
first failed check.

Environment: ENGRAM_URL, ENGRAM_WRITER_KEY, ENGRAM_READER_KEY, ENGRAM_LLM_MODEL.
"""

import json
import os
import time
import urllib.request

import openai
from openai import OpenAI

URL = os.environ["ENGRAM_URL"]
WRITER = os.environ["ENGRAM_WRITER_KEY"]
READER = os.environ["ENGRAM_READER_KEY"]
MODEL = os.environ["ENGRAM_LLM_MODEL"]
NS = "agent:proxy"


def api(method, path, body=None, key=WRITER):
    req = urllib.request.Request(
        URL + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


memory = api("POST", "/v1/memories?wait=true",
             {"namespace": NS, "text": "The user's cat is called Miso and likes salmon"})
mid = memory["id"]

client = OpenAI(base_url=f"{URL}/v1", api_key=WRITER, max_retries=0)
question = [{"role": "user", "content": "What is my cat called?"}]
headers = {"X-Engram-Namespace": NS, "X-Engram-Session": "proxy-chat"}

# Not streamed: the LLM's JSON answer, the memories used in a header.
raw = client.chat.completions.with_raw_response.create(
    model=MODEL, messages=question, max_tokens=8, extra_headers=headers)
assert mid in raw.headers["x-engram-memories"].split(","), raw.headers
completion = raw.parse()
answer = completion.choices[0].message.content
assert isinstance(answer, str) and answer.strip(), completion

# Streamed: OpenAI's chunks, as the LLM server sent them.
chunks = list(client.chat.completions.create(
    model=MODEL, messages=question, max_tokens=8, stream=True, extra_headers=headers))
assert chunks, "no chunks"
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed.strip(), chunks

# Both exchanges are recorded in the session, question then answer (the
# recording follows the answer's end, which a client need not wait for).
deadline = time.time() + 10
while True:
    page = api("GET", f"/v1/sessions/proxy-chat/messages?namespace={NS}")
    said = [(m["session"]["speaker"], m["text"]) for m in page["messages"]]
    if len(said) >= 4 or time.time() > deadline:
        break
    time.sleep(0.1)
# (engram stores texts trimmed.)
want = [("user", "What is my cat called?"), ("assistant", answer.strip()),
        ("user", "What is my cat called?"), ("assistant", streamed.strip())]
assert said == want, (said, want)

# The namespace can come from OpenAI's `user` field; no model given is the configured one.
raw = client.chat.completions.with_raw_response.create(
    model=MODEL, messages=question, max_tokens=4, user=NS)
assert raw.headers["x-engram-namespace"] == NS and mid in raw.headers["x-engram-memories"]

# The chat model is listed beside the embedding model.
ids = {m.id: m for m in client.models.list()}
assert MODEL in ids and "all-MiniLM-L6-v2" in ids, ids

# Bad input: engram's errors, as the client's exceptions.
try:
    client.chat.completions.create(model=MODEL, messages=question, max_tokens=8)
    raise AssertionError("no namespace was accepted")
except openai.BadRequestError as e:
    assert e.body["code"] == "invalid_request", e.body
try:
    client.chat.completions.create(model=MODEL, messages=question, max_tokens=100000,
                                   extra_headers={"X-Engram-Namespace": NS})
    raise AssertionError("max_tokens 100000 was accepted")
except openai.BadRequestError as e:
    assert e.body["code"] == "out_of_range", e.body
# A reader may chat with memory but not record the exchange.
reader = OpenAI(base_url=f"{URL}/v1", api_key=READER, max_retries=0)
r = reader.chat.completions.create(model=MODEL, messages=question, max_tokens=4,
                                   extra_headers={"X-Engram-Namespace": NS})
assert r.choices[0].message.content is not None
try:
    reader.chat.completions.create(model=MODEL, messages=question, max_tokens=4, extra_headers=headers)
    raise AssertionError("a reader recorded a session")
except openai.PermissionDeniedError as e:
    assert e.body["code"] == "forbidden", e.body
print("ok")
