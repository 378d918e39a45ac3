"""wire/served.py: every event's `model` becomes the serving slug, however the upstream cuts its
stream into chunks, including events whose model differs from the first one's (the relay in
pipeline/dispatch.py feeds each upstream chunk through a StreamRewrite)."""

import orjson

from gateway.wire import served

SLUG = "test/fast"


def event(model: str, content: str, sep: bytes = b"\n\n") -> bytes:
    return b"data: " + orjson.dumps({"id": "c1", "model": model, "choices": [{"delta": {"content": content}}]}) + sep


def rewrite_all(chunks, slug: str) -> bytes:
    rewrite = served.StreamRewrite(slug)
    return b"".join(rewrite.feed(c) for c in chunks) + rewrite.tail()


def models_in(data: bytes) -> list[str]:
    out = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        if block.startswith(b"data: {"):
            out.append(orjson.loads(block[6:])["model"])
    return out


def test_every_split_of_a_stream_rewrites_every_model():
    stream = (event("gpt-4o-2024-08-06", "a") + event("gpt-4o-2024-08-06", 'say "model": "x"')
              + event("other-model", "b") + b'data: {"model" : "spaced"}\r\n\r\n' + b"data: [DONE]\n\n")
    for cut in range(1, len(stream)):
        for second in (cut, min(len(stream), cut + 7)):
            parts = [stream[:cut], stream[cut:second], stream[second:]]
            out = rewrite_all([p for p in parts if p], SLUG)
            assert models_in(out) == [SLUG] * 4, cut
            assert b'say \\"model\\": \\"x\\"' in out  # content that mentions a model is untouched
            assert out.endswith(b"data: [DONE]\n\n")


def test_whole_event_chunks_take_the_plain_replace_and_still_catch_a_new_name():
    chunks = [event("m1", "a"), event("m1", "b"), event("m2", "c"), event("m1", "d") + event("m3", "e")]
    out = rewrite_all(chunks, SLUG)
    assert models_in(out) == [SLUG] * 5
    assert b"m1" not in out and b"m2" not in out and b"m3" not in out
