"""ClientApp: routes each message type to the node-side step of the method that sent it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from logging import WARNING
from types import ModuleType

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from baselines import central, dlad, fedavg
from flower_gd.codecs import WEIGHTS_KEY, PayloadError
from flower_gd.config import RunConfig
from flower_gd.faults import delay_if_slow, unavailable_reply
from flower_gd.node import Node
from strategies import gossip, gossip_adaptive
from strategies.gossip import PULLERS_KEY, SHARED_KEY

app = ClientApp()
Handler = Callable[[Message, Context], Message]


def alive(handler: Handler) -> Handler:
    """A node that `drop-nodes` has killed answers every message with an error, touching
    nothing (the simulation's stand-in for a SuperNode that is gone)."""

    @functools.wraps(handler)
    def wrapper(message: Message, context: Context) -> Message:
        cfg = RunConfig.from_mapping(context.run_config)
        down = unavailable_reply(message, cfg, int(context.node_config["partition-id"]))
        return down if down is not None else handler(message, context)

    return wrapper


def _reply(message: Message, metrics: dict[str, float], content: RecordDict | None = None) -> Message:
    content = RecordDict() if content is None else content
    content["metrics"] = MetricRecord({k: float(v) for k, v in metrics.items()})
    return Message(content=content, reply_to=message)


def _gossip_module(node: Node) -> ModuleType:
    """The node steps of the gossip variant this run uses (same message types for both)."""
    return gossip_adaptive if node.cfg.method == "gossip-adaptive" else gossip


@app.train("local")
@alive
def local_phase(message: Message, context: Context) -> Message:
    """Gossip / local: train on private data, infer the common data."""
    node = Node.from_message(message, context)
    return _reply(message, _gossip_module(node).local_phase(node))


@app.query("inference")
@alive
def share_inference(message: Message, context: Context) -> Message:
    """Gossip: answer a peer's pull with this node's payload (list and counter / belief and
    weights)."""
    node = Node.from_message(message, context)
    config = message.content["config"]
    if node.cfg.method == "gossip-adaptive":
        content = gossip_adaptive.share(node, int(config.get(PULLERS_KEY, 1)),
                                        list(config.get(SHARED_KEY, [])))
    else:
        content = gossip.share(node)
    delay_if_slow(node.cfg, node.partition_id)
    return Message(content=content, reply_to=message)


@app.query("status")
@alive
def status(message: Message, context: Context) -> Message:
    """Resume: which partition this node is and the newest round it holds state for."""
    node = Node.from_message(message, context)
    rounds = node.store.rounds()
    return _reply(message, {"partition-id": node.partition_id,
                            "state-round": rounds[-1] if rounds else -1})


@app.train("gossip")
@alive
def gossip_step(message: Message, context: Context) -> Message:
    """Gossip: mix relayed peer payloads into this node's list and retrain on it."""
    node = Node.from_message(message, context)
    server_round = int(message.content["config"]["server-round"])
    try:
        if node.cfg.method == "gossip-adaptive":
            shared = list(message.content["config"].get(SHARED_KEY, []))
            metrics = gossip_adaptive.gossip_step(node, message.content, server_round, shared)
        else:
            metrics = gossip.gossip_step(node, message.content, server_round)
    except PayloadError as err:
        log(WARNING, "node %s rejected a payload in round %s: %s; keeping its state",
            node.partition_id, server_round, err)
        metrics = {"payload-rejected": 1.0}
    return _reply(message, metrics)


@app.train("dlad")
@alive
def dlad_upload(message: Message, context: Context) -> Message:
    """DLAD: train classifier and discriminator, upload softmax outputs and confidences."""
    content, metrics = dlad.local_phase(Node.from_message(message, context))
    return _reply(message, metrics, content)


@app.train()
@alive
def fedavg_update(message: Message, context: Context) -> Message:
    """FedAvg (Flower's default train message): local epochs from the global arrays."""
    node = Node.from_message(message, context)
    server_round = int(message.content["config"]["server-round"])
    content = fedavg.local_update(node, message.content[WEIGHTS_KEY], server_round)
    return Message(content=content, reply_to=message)


@app.query("private_data")
@alive
def share_private(message: Message, context: Context) -> Message:
    """Central bound only: upload the raw private samples."""
    return Message(content=central.share_private(Node.from_message(message, context)),
                   reply_to=message)


@app.evaluate()
@alive
def evaluate(message: Message, context: Context) -> Message:
    """Test-set accuracy of a global model sent as `arrays`, or else of this node's own."""
    node = Node.from_message(message, context)
    if WEIGHTS_KEY in message.content.array_records:
        model = node.new_model(family=node.cfg.global_model)
        model.load_state_dict(message.content[WEIGHTS_KEY].to_torch_state_dict())
    else:
        model = node.load_model()
    metrics = node.test_metrics(model)
    return _reply(message, {**metrics, "num-examples": len(node.data.test[1])})
