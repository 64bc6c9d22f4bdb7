"""The OpenAI-compatible engine against real HTTP servers on loopback.

Retries, timeouts and usage accounting are checked against a small ``http.server`` the test starts
(it answers 503 first, or stalls); generation end-to-end against vLLM's own ``vllm serve`` lives in
tests/test_vllm_engine.py (it shares that file's single server start).
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from rlenv.engines.base import SamplingParams
from rlenv.engines.openai import OpenAIEngine, OpenAIEngineError


class _Handler(http.server.BaseHTTPRequestHandler):
    """Replays ``server.script``: a list of ("status", delay_s) per request, then 200 forever."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.bodies.append(body)
            step = srv.script.pop(0) if srv.script else (200, 0.0)
        status, delay = step
        time.sleep(delay)
        if status != 200:
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": "busy"}')
            return
        n = body.get("n", 1)
        if "messages" in body:
            choices = [{"index": i, "message": {"role": "assistant", "content": f"four{i}"},
                        "logprobs": {"content": [{"token": "four", "logprob": -0.5}]},
                        "finish_reason": "stop"} for i in range(n)]
        else:
            choices = [{"index": i, "text": "ab", "token_ids": [97, 98],
                        "logprobs": {"token_logprobs": [-1.0, -2.0]}, "finish_reason": "length"}
                       for i in range(n)]
        payload = json.dumps({"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n,
                                                            "total_tokens": 3 + 2 * n}}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first: the point
            pass


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.lock, srv.script, srv.bodies = threading.Lock(), [], []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _engine(srv, **kw):
    return OpenAIEngine(f"http://127.0.0.1:{srv.server_address[1]}", model="m", backoff=0.01, **kw)


def test_retries_503_then_succeeds_and_counts_usage(server):
    server.script = [(503, 0.0), (429, 0.0)]
    engine = _engine(server, max_retries=3)
    out = engine.generate([[{"role": "user", "content": "2+2?"}]], SamplingParams(n=2, top_k=5, seed=1))
    assert [c.text for c in out[0]] == ["four0", "four1"]
    assert out[0][0].logprobs == [-0.5] and out[0][0].finish_reason == "stop"
    assert engine.usage["retries"] == 2 and engine.usage["requests"] == 3
    assert engine.usage["completion_tokens"] == 4 and engine.usage["prompt_tokens"] == 3
    sent = server.bodies[-1]
    assert sent["n"] == 2 and sent["top_k"] == 5 and sent["seed"] == 1 and sent["logprobs"] is True


def test_token_prompt_goes_to_completions_with_ids_and_logprobs(server):
    engine = _engine(server)
    out = engine.generate([[1, 2, 3], "plain"], SamplingParams(max_new_tokens=2))
    assert out[0][0].token_ids == [97, 98] and out[0][0].logprobs == [-1.0, -2.0]
    assert out[0][0].finish_reason == "length" and out[1][0].prompt_index == 1
    assert server.bodies[0]["prompt"] in ([1, 2, 3], "plain") and "top_k" not in server.bodies[0]


def test_gives_up_with_clear_error_after_retries(server):
    server.script = [(503, 0.0)] * 10
    engine = _engine(server, max_retries=2)
    with pytest.raises(OpenAIEngineError, match="after 3 attempts"):
        engine.generate([[1, 2]], SamplingParams())


def test_timeout_is_retried(server):
    server.script = [(200, 1.5)]  # first answer stalls past the 0.5 s timeout; the retry is fast
    engine = _engine(server, timeout=0.5, max_retries=1)
    out = engine.generate([[1, 2]], SamplingParams())
    assert out[0][0].text == "ab" and engine.usage["retries"] == 1


def test_non_retryable_status_fails_at_once(server):
    server.script = [(404, 0.0)]
    engine = _engine(server, max_retries=5)
    with pytest.raises(OpenAIEngineError, match="HTTP 404") as info:
        engine.generate([[1, 2]], SamplingParams())
    assert info.value.status == 404 and engine.usage["requests"] == 1


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="base_url"):
        OpenAIEngine("localhost:8000", model="m")
    with pytest.raises(ValueError, match="render_chat_locally"):
        OpenAIEngine("http://127.0.0.1:1/v1", model="m", render_chat_locally=True)
    engine = OpenAIEngine("http://127.0.0.1:1/v1", model="m")
    with pytest.raises(TypeError, match="prompt 0"):
        engine.generate([3.5], SamplingParams())
