"""ClientApp: routes each message to the node step that the run's method registers for it."""

from __future__ import annotations

import time
from logging import WARNING

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from flower_gd import methods
from flower_gd.codecs import PayloadError
from flower_gd.config import RunConfig
from flower_gd.faults import unavailable_reply
from flower_gd.node import Node
from flower_gd.training import refused_steps

app = ClientApp()


def handle(message: Message, context: Context) -> Message:
    """Answer one message: the run's method's step for its type, on this node.

    A node that `drop-nodes` has killed answers with an error and touches nothing; a step
    that rejects a peer's payload keeps the node's state and reports `payload-rejected`.
    """
    started = time.perf_counter()
    cfg = RunConfig.from_mapping(context.run_config)  # parsed once per message
    node = Node.from_message(message, context, cfg)
    down = unavailable_reply(message, node)
    if down is not None:
        return down
    message_type = message.metadata.message_type
    step = methods.get(cfg.method).steps.get(message_type)
    if step is None:
        raise ValueError(f"method={cfg.method} has no node step for {message_type!r}")
    try:
        with refused_steps() as refused:
            reply = step(node, message.content)
    except PayloadError as err:
        log(WARNING, "node %s rejected a payload in round %s: %s; keeping its state",
            node.partition_id, node.server_round, err)
        reply = {"payload-rejected": 1.0}
    if not isinstance(reply, RecordDict):
        if refused.count:  # only then: a healthy node's reply stays as it was
            reply = {**reply, "diverged-steps": float(refused.count)}
        reply = RecordDict({"metrics": MetricRecord({k: float(v) for k, v in reply.items()})})
    # on disk, not in the reply: timing must not change what crosses the wire
    node.store.log_busy(message_type, node.server_round, time.perf_counter() - started)
    return Message(content=reply, reply_to=message)


# Flower routes by message type ("<category>.<action>"): register `handle` for every type
# some registered method answers.
for _type in methods.message_types():
    _category, _, _action = _type.partition(".")
    getattr(app, _category)(_action or "default")(handle)
