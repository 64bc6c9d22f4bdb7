"""An engine that talks to any OpenAI-compatible server (``vllm serve``, SGLang, llama.cpp, a hosted API).

Only the standard library is used (``urllib``), so it adds no dependency. Requests run in a bounded
thread pool (``max_concurrency`` in flight at once); a failed request is retried with exponential
backoff and jitter on connection errors, timeouts and the retryable HTTP statuses (408, 409, 429,
5xx), honouring ``Retry-After``; any other status fails at once with the server's own message.
Token usage reported by the server is summed in :attr:`OpenAIEngine.usage`.

Prompt shapes and the endpoint they go to:

* chat messages (a list of ``{"role", "content"}`` dicts) → ``/chat/completions`` — unless
  ``render_chat_locally=True`` and a tokenizer is given, then the chat template is applied here and
  the token ids go to ``/completions`` (what vLLM server mode does, so the trainer's template is used);
* token ids (a list of ints) or a plain string → ``/completions`` (token-id prompts are a vLLM /
  SGLang extension of the API).

Log-probs and token ids come back when the server returns them (vLLM does, with
``return_token_ids``); otherwise ``Completion.logprobs`` / ``token_ids`` are empty lists (or, for
token ids, the tokenizer's encoding of the text when a tokenizer is given).

>>> engine = OpenAIEngine("http://127.0.0.1:8000/v1", model="my-model")     # doctest: +SKIP
>>> engine.generate([[{"role": "user", "content": "2+2?"}]], SamplingParams(n=4))  # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional, Sequence

from rlenv.engines.base import Completion, Engine, SamplingParams

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAIEngineError(RuntimeError):
    """A request to the OpenAI-compatible server failed for good (after retries, or not retryable)."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying."""

    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIEngine(Engine):
    """Generate through an OpenAI-compatible HTTP server.

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is appended when the
    URL has no path). ``timeout`` bounds each HTTP attempt in seconds; ``max_retries`` counts the
    extra attempts after the first. ``extra_body`` is merged into every request body (for
    server-specific options).
    """

    def __init__(self, base_url: str, model: str, *, api_key: Optional[str] = None,
                 tokenizer: Any = None, max_concurrency: int = 8, timeout: float = 120.0,
                 max_retries: int = 4, backoff: float = 0.5, max_backoff: float = 8.0,
                 logprobs: bool = True, render_chat_locally: bool = False,
                 extra_body: Optional[dict] = None):
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url={base_url!r} is not an http(s) URL; pass e.g. "
                             "'http://127.0.0.1:8000/v1'")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be ≥ 1, got {max_concurrency}")
        if max_retries < 0 or timeout <= 0:
            raise ValueError(f"need max_retries ≥ 0 and timeout > 0, got {max_retries}, {timeout}")
        self.base_url = base_url.rstrip("/") + ("/v1" if parsed.path in ("", "/") else "")
        self.model = model
        self.api_key = api_key
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer
        if render_chat_locally and tokenizer is None:
            raise ValueError("render_chat_locally=True needs a tokenizer (a path or a tokenizer object)")
        self.render_chat_locally = render_chat_locally
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.logprobs = logprobs
        self.extra_body = dict(extra_body or {})
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_concurrency, thread_name_prefix="openai")
        #: summed over the engine's life: tokens the server reported, requests made, retries taken
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                      "requests": 0, "retries": 0}

    # ------------------------------------------------------------------ HTTP
    def _attempt(self, method: str, path: str, body: Optional[dict]) -> dict:
        data = None if body is None else json.dumps(body).encode()
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return json.loads(raw.decode()) if raw.strip() else {}  # control routes may send no body
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            if err.code in RETRYABLE_STATUS:
                retry_after = err.headers.get("Retry-After") if err.headers else None
                try:
                    retry_after = float(retry_after) if retry_after is not None else None
                except ValueError:  # an HTTP date instead of seconds: fall back to our backoff
                    retry_after = None
                raise _Retryable(f"HTTP {err.code}: {detail}", retry_after) from None
            raise OpenAIEngineError(
                f"{method} {url} failed with HTTP {err.code}: {detail} — check "
                f"the model name ({self.model!r}) and the request options", status=err.code) from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as err:
            raise _Retryable(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from None
        except json.JSONDecodeError as err:
            raise _Retryable(f"the server sent a body that is not JSON ({err})") from None

    def request(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        """One API call with retries and backoff; returns the decoded JSON response. ``path`` is
        relative to ``base_url`` (``"/completions"``) or a full URL."""
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.usage["requests"] += 1
            try:
                return self._attempt(method, path, body)
            except _Retryable as err:
                if attempt == self.max_retries:
                    raise OpenAIEngineError(
                        f"{method} {path if '://' in path else self.base_url + path} still failing after {attempt + 1} attempts "
                        f"(last: {err}); is the server up and reachable? Raise timeout= or "
                        f"max_retries= if it is just slow") from None
                delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
                if err.retry_after is not None:
                    delay = min(self.max_backoff, max(delay, err.retry_after))
                with self._lock:
                    self.usage["retries"] += 1
                time.sleep(delay)
        raise AssertionError("unreachable")

    def list_models(self) -> list[str]:
        """Ids of the models the server serves (``GET /models``)."""
        return [m["id"] for m in self.request("GET", "/models").get("data", [])]

    def wait_until_ready(self, timeout: float = 120.0, poll: float = 0.5) -> None:
        """Block until ``GET /models`` answers (a server that is still starting), or raise after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                self._attempt("GET", "/models", None)
                return
            except (_Retryable, OpenAIEngineError) as err:
                last = err
                time.sleep(poll)
        raise OpenAIEngineError(f"the server at {self.base_url} did not answer within {timeout:.0f} s "
                                f"(last error: {last})")

    # ------------------------------------------------------------ generation
    def _body(self, params: SamplingParams, chat: bool) -> dict:
        body = {"model": self.model, "n": params.n, "temperature": params.temperature,
                "top_p": params.top_p, "max_tokens": params.max_new_tokens}
        if params.top_k > 0:  # not in OpenAI's API; vLLM and SGLang accept it
            body["top_k"] = params.top_k
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if self.logprobs:
            if chat:
                body.update(logprobs=True, top_logprobs=0)
            else:
                body["logprobs"] = 0  # the sampled token's log-prob only
        return {**body, **self.extra_body}

    def _one(self, index: int, prompt: Any, params: SamplingParams) -> list[Completion]:
        is_chat = isinstance(prompt, (list, tuple)) and len(prompt) > 0 and isinstance(prompt[0], dict)
        if is_chat and self.render_chat_locally:
            from rlenv.engines.hf import encode_prompt  # the one chat-template rendering, shared

            prompt, is_chat = encode_prompt(self.tokenizer, prompt), False
        if is_chat:
            body = dict(self._body(params, chat=True), messages=list(prompt))
            response = self.request("POST", "/chat/completions", body)
        elif isinstance(prompt, str) or (isinstance(prompt, (list, tuple))
                                         and all(isinstance(t, int) for t in prompt)):
            body = dict(self._body(params, chat=False),
                        prompt=prompt if isinstance(prompt, str) else list(prompt))
            response = self.request("POST", "/completions", body)
        else:
            raise TypeError(f"prompt {index} is a {type(prompt).__name__}; pass a list of chat "
                            "messages, a list of token ids, or a string")
        usage = response.get("usage") or {}
        with self._lock:
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                self.usage[key] += int(usage.get(key) or 0)
        choices = sorted(response.get("choices", []), key=lambda c: c.get("index", 0))
        return [self._completion(choice, index, is_chat) for choice in choices]

    def _completion(self, choice: dict, index: int, chat: bool) -> Completion:
        text = ((choice.get("message") or {}).get("content") or "") if chat else choice.get("text", "")
        lp = choice.get("logprobs") or {}
        if chat:
            logprobs = [entry["logprob"] for entry in (lp.get("content") or [])]
        else:
            logprobs = [x for x in (lp.get("token_logprobs") or []) if x is not None]
        token_ids = choice.get("token_ids")
        if token_ids is None:
            token_ids = (self.tokenizer.encode(text, add_special_tokens=False)
                         if self.tokenizer is not None else [])
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(token_ids=list(token_ids), text=text, logprobs=[float(x) for x in logprobs],
                          finish_reason=finish, prompt_index=index)

    def generate(self, prompts: Sequence[Any], params: SamplingParams) -> list[list[Completion]]:
        """Sample ``params.n`` completions per prompt; one request per prompt, at most
        ``max_concurrency`` in flight."""
        futures = [self._pool.submit(self._one, i, p, params) for i, p in enumerate(prompts)]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop the request pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)
