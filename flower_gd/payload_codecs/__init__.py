"""The payload codecs by name: the one place a codec is found (`get`), and what the config
offers (`CODECS`).

One module per codec; float32, the paper's format and what every method sends by default,
lives in `flower_gd.codecs` beside the envelope every codec shares. Like the method
registry, this table only routes a name to its module: it is part of no run's code, and a
run's code holds the module of its own codec (`flower_gd/provenance.py`), so adding a codec
re-measures nothing and editing one re-measures only its runs.

To add a codec: a module here with a `CODEC = PayloadCodec(...)` (see `hard.py`, the
smallest), its entry below, and its round trip and refusals in `tests/test_codecs.py`
(`tests/test_payload_fuzz.py` fuzzes every registered codec).
"""

from __future__ import annotations

from flower_gd.codecs import FLOAT32, PayloadCodec
from flower_gd.payload_codecs import float16, hard, hard4, hard4p1, hard4p2r1_ac, topk, uint8

REGISTRY: dict[str, PayloadCodec] = {c.name: c for c in (
    FLOAT32, float16.CODEC, uint8.CODEC, topk.CODEC, hard.CODEC, hard4.CODEC, hard4p1.CODEC,
    hard4p2r1_ac.CODEC)}
CODECS = tuple(REGISTRY)
# Codecs that only carry probabilities (they quantize values in [0, 1]).
PROBABILITY_CODECS = tuple(name for name, c in REGISTRY.items() if c.probabilities)


def get(name: str) -> PayloadCodec:
    """The codec called `name`; ValueError listing the codecs otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"codec {name!r} unknown; choose one of {list(CODECS)}")
    return REGISTRY[name]
