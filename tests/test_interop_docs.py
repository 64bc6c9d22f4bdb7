"""docs/interop.md runs as written: its python blocks are executed in order (in a scratch folder),
its YAML blocks validate as run specs. The vLLM-server snippet talks to an OpenAI-compatible server
started here on loopback, serving the micro model with transformers (``/v1/chat/completions``,
``/v1/completions``)."""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path

import pytest
import yaml

DOC = Path(__file__).resolve().parent.parent / "docs" / "interop.md"
DOC_URL = "http://127.0.0.1:8000/v1"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


class ChatServer(http.server.ThreadingHTTPServer):
    """The smallest OpenAI-compatible server: a real causal LM behind ``/v1/chat/completions`` and
    ``/v1/completions`` (text or token-id prompts, as vLLM accepts)."""

    def __init__(self, model_dir: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.lock = threading.Lock()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _ChatHandler)

    def complete(self, body: dict, chat: bool) -> dict:
        import torch

        if chat:
            ids = self.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)["input_ids"]
        else:  # token ids (vLLM's extension, what rollouts send) or text
            prompt = body["prompt"]
            ids = torch.tensor([prompt]) if isinstance(prompt, list) else self.tokenizer(prompt, return_tensors="pt").input_ids
        n, max_tokens = int(body.get("n", 1)), int(body.get("max_tokens") or 16)
        temperature = float(body.get("temperature", 1.0))
        with self.lock, torch.no_grad():
            out = self.model.generate(ids, do_sample=temperature > 0, temperature=temperature or None, top_k=0,
                                      max_new_tokens=max_tokens, num_return_sequences=n, output_scores=True,
                                      return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id or 0)
            scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        new = out.sequences[:, ids.shape[1]:]
        eos = self.tokenizer.eos_token_id
        choices, used = [], 0
        for i, row in enumerate(new.tolist()):
            # like vLLM: the sampled ids up to and including EOS, with each one's log-prob
            end = row.index(eos) + 1 if eos in row else len(row)
            row, logps = row[:end], scores[i, :end].tolist()
            used += len(row)
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            choice = {"index": i, "finish_reason": "stop" if end < len(new[i]) or (row and row[-1] == eos) else "length",
                      "token_ids": row}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice.update(text=text, logprobs={"token_logprobs": logps})
            choices.append(choice)
        return {"id": "cmpl-doc", "object": "chat.completion" if chat else "text_completion",
                "model": body.get("model"), "choices": choices,
                "usage": {"prompt_tokens": int(ids.shape[1]), "completion_tokens": used,
                          "total_tokens": int(ids.shape[1]) + used}}


class _ChatHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self.send_error(404, f"no route {self.path}")
            return
        self.server.requests += 1
        data = json.dumps(self.server.complete(body, chat=self.path.endswith("chat/completions"))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture()
def chat_server(micro_model_dir):
    srv = ChatServer(micro_model_dir)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.slow
def test_python_snippets_run_in_order(tmp_path, monkeypatch, chat_server, single_thread):
    code = blocks("python")
    assert len(code) == 6 and any(DOC_URL in c for c in code)
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{chat_server.server_address[1]}/v1"
    ns: dict = {"__name__": "interop_doc"}
    for block in code:
        exec(compile(block.replace(DOC_URL, url), str(DOC), "exec"), ns)
    assert (tmp_path / "models" / "micro" / "config.json").exists()
    assert ns["trainer"].state.global_step == 2                       # TRL's GRPOTrainer on math-v0
    assert ns["reward"] == 1.0 and ns["info"]["scores"] == {"correct": 1.0, "format": 1.0}  # reasoning-gym
    assert ns["result"]["num_tasks"] == 4 and 0 <= ns["result"]["pass@1"] <= ns["result"]["pass@2"] <= 1
    assert chat_server.requests == 4 and ns["engine"].usage["completion_tokens"] > 0
    assert type(ns["policy"]).__name__ == "Qwen2ForCausalLM"


def test_trl_reward_snippet_scores_as_documented(capsys):
    import rlenv  # noqa: F401

    ns: dict = {}
    exec(compile(blocks("python")[1], str(DOC), "exec"), ns)
    assert capsys.readouterr().out.strip() == "2.0"


def test_yaml_snippets_are_valid_run_specs():
    from rlenv.runspec import parse_spec

    for block in blocks("yaml"):
        data = yaml.safe_load(block)
        spec = parse_spec({"model": "preset:micro", "stages": [{"grpo": {"max_steps": 1}}], **data})
        assert spec.env.id in ("rg/leg_counting-v0", "dataset-v0")


@pytest.mark.slow
def test_cli_eval_against_a_server(chat_server, micro_model_dir, tmp_path, capsys, single_thread):
    """`rlenv eval ENV --base-url URL --model NAME` goes through the OpenAI-compatible engine."""
    import json

    from rlenv.cli import main

    url = f"http://127.0.0.1:{chat_server.server_address[1]}/v1"
    out = tmp_path / "samples.jsonl"
    rc = main(["eval", "arithmetic-v0", "--base-url", url, "--model", "micro", "--tokenizer", micro_model_dir,
               "-n", "2", "-k", "1,2", "--num-tasks", "3", "--max-new-tokens", "6", "--out", str(out)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_tasks"] == 3 and 0 <= result["pass@1"] <= result["pass@2"] <= 1
    assert chat_server.requests > 0 and len(out.read_text().splitlines()) == 6
    assert main(["eval", "arithmetic-v0", "--base-url", url, "--model", "no-such-model"]) == 2
