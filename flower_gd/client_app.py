"""ClientApp: routes each message type to the node-side step of the selected method."""

from __future__ import annotations

from logging import WARNING

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from flower_gd.codecs import PayloadError
from flower_gd.node import Node
from strategies import gossip

app = ClientApp()


def _reply(message: Message, metrics: dict[str, float], content: RecordDict | None = None) -> Message:
    content = RecordDict() if content is None else content
    content["metrics"] = MetricRecord({k: float(v) for k, v in metrics.items()})
    return Message(content=content, reply_to=message)


@app.train("local")
def local_phase(message: Message, context: Context) -> Message:
    """Train on private data, infer the common data (the local phase)."""
    return _reply(message, gossip.local_phase(Node.from_message(message, context)))


@app.query("inference")
def share_inference(message: Message, context: Context) -> Message:
    """Answer a peer's pull with this node's inference list and counter."""
    return Message(content=gossip.share(Node.from_message(message, context)), reply_to=message)


@app.train("gossip")
def gossip_step(message: Message, context: Context) -> Message:
    """Mix a relayed peer payload into this node's list and retrain on it."""
    node = Node.from_message(message, context)
    server_round = int(message.content["config"]["server-round"])
    try:
        metrics = gossip.gossip_step(node, message.content, server_round)
    except PayloadError as err:
        log(WARNING, "node %s rejected a payload in round %s: %s; keeping its state",
            node.partition_id, server_round, err)
        metrics = {"payload-rejected": 1.0}
    return _reply(message, metrics)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Accuracy and loss of this node's current model on the test set."""
    node = Node.from_message(message, context)
    return _reply(message, node.test_metrics(node.load_model()))
