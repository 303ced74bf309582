"""Measured sizes (Tables II and IV analogues): models and payloads as Flower serializes them.

Unlike `tables`, which only reads saved runs, this module makes new measurements: it builds
models and payloads and sizes the Flower records and messages they travel in, with the meter's
own functions.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, Message

from flower_gd.codecs import Codec, InferencePayload, encode_payload
from flower_gd.flower_internals import ensure_serverapp_identity
from flower_gd.metering import MIB, object_nbytes, transfer_nbytes
from flower_gd.models import build_model, count_parameters
from flower_gd.tables import Table

# Common-set sizes of the paper's datasets (80% of the training set) and the payload sizes
# the paper reports for them, in its "MiB" (sys.getsizeof of per-row Python objects).
PAPER_PAYLOADS = {"MNIST": (48_000, 3.46), "CIFAR-10": (40_000, 2.88), "CINIC-10": (72_000, 5.18)}
MODEL_FAMILIES = ("cnn", "cnn-wide", "mobilenet_v3_small", "resnet18", "densenet121")


def model_size_table(in_channels: int = 3, num_classes: int = 10) -> Table:
    """Table II analogue: parameters and the bytes Flower sends for each model family.

    Bytes are measured by serializing the model's ArrayRecord into Flower's object tree,
    exactly as the meter sizes a weights message's content. Flower stores identical chunks
    once, and a fresh model has many identical BatchNorm constants, so the floats are first
    replaced by random values, as in a trained model.
    """
    header = ["model", "input channels", "parameters", "serialized bytes", "MiB"]
    body = []
    for name in MODEL_FAMILIES:
        model = build_model(name, in_channels, num_classes)
        generator = torch.Generator().manual_seed(0)
        state = {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                 for k, v in model.state_dict().items()}
        nbytes = object_nbytes(ArrayRecord(state))
        body.append([name, str(in_channels), f"{count_parameters(model):,}", str(nbytes),
                     f"{nbytes / MIB:.2f}"])
    return header, body


def paper_payload_table(num_classes: int = 10) -> Table:
    """Table IV as published against what Flower sends for the same inference list.

    Each payload is encoded by the project's codec into a Flower message and sized by the
    meter (every Fleet API body that delivers it to a node), as a real exchange would be.
    """
    ensure_serverapp_identity()  # the sizing messages are built as the ServerApp would
    header = ["dataset", "common samples", "published (\"MiB\")", "float32 data (bytes)",
              "Flower message (bytes)", "Flower message (MiB)"]
    body = []
    for name, (n, published) in PAPER_PAYLOADS.items():
        scores = np.full((n, num_classes), 1.0 / num_classes, dtype=np.float32)
        # raw float32, the paper's format (a constant array would otherwise deflate)
        content = encode_payload(InferencePayload(scores, 1, "probs"), Codec(compress=False))
        message = Message(content=content, dst_node_id=2, message_type="train.gossip")
        nbytes = transfer_nbytes(message, "down")
        body.append([name, str(n), f"{published:.2f}", str(scores.nbytes), str(nbytes),
                     f"{nbytes / MIB:.3f}"])
    return header, body
