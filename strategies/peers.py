"""What a relay method's node does with the payloads relayed to it: validate each, and (with
`robust-mix = clip`) bound how far one peer can move it. Shared by gossip, gossip-adaptive and
distributed distillation; a module of its own so that each of them depends on exactly this,
not on another method's file."""

from __future__ import annotations

from logging import WARNING

import numpy as np
from flwr.app import RecordDict
from flwr.common.logger import log

from flower_gd.codecs import (
    Expect,
    InferencePayload,
    PayloadError,
    count_payloads,
    decode_payload,
    payload_key,
)
from flower_gd.distill import clip_toward
from flower_gd.node import Node


def decode_peers(node: Node, content: RecordDict, shape: tuple[int, int], expect: Expect
                 ) -> tuple[list[InferencePayload], dict[int, str]]:
    """Every relayed payload that passes validation (`expect`: what this receiver needs),
    and the others' positions in the message with the reason each was refused.

    A refused payload is logged with its reason and its scores never touch this node.
    """
    peers, refused = [], {}
    for i in range(count_payloads(content)):
        try:
            peers.append(decode_payload(content, shape, payload_key(i), expect))
        except PayloadError as err:
            refused[i] = str(err)
            log(WARNING, "node %s rejected payload %s in round %s: %s", node.partition_id, i,
                node.server_round, err)
    return peers, refused


def robust(node: Node, own: np.ndarray, peer: np.ndarray) -> np.ndarray:
    """`robust-mix = clip`: bound how far one peer can move each sample (self-centered
    clipping); `none`: the peer's list as sent."""
    if node.cfg.robust_mix == "clip":
        return clip_toward(own, peer, node.cfg.clip_radius)
    return peer
