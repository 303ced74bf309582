"""The meter against the wire: each method deployed on loopback behind a byte-counting proxy.

Usage: ``python -m flower_gd.meter_check [--out results/meter] [--methods ...]``

For each method it runs a small digits experiment on Flower's deployment engine (a real
SuperLink and SuperNodes, insecure gRPC on loopback) with every SuperNode dialling the
SuperLink through `flower_gd.wire_proxy.WireProxy`, and sets what the meter counted beside
what crossed the TCP connections, call by call (Flower's Fleet API is HTTP/1.1 with protobuf
bodies): HTTP framing, heartbeats, and the bodies of the calls that move messages and their
objects (requests and responses), and polls that brought nothing. What the meter counts is
defined in `flower_gd.metering`: for each message, the protobuf bodies of the Fleet API calls
that move it; the transport's framing, heartbeats, idle polls and the app bundle are not in it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flower_gd.deploy import deploy
from flower_gd.tables import markdown

METHODS = ("gossip", "gossip-adaptive", "dlad", "fedavg")
RUN = "round-timeout=120.0 pull-timeout=30.0 local-epochs=5 disc-epochs=2 distill-epochs=3"
FLEET = "/v1/fleet/"
# The calls that move a message to a node ("down") or from it ("up"); the rest is control:
# register, heartbeats, get-run, get-fab. Polls that return no message are filed as idle.
CARRYING = {"down": ("pull-messages", "pull-object", "confirm-message-received"),
            "up": ("push-messages", "push-object")}


def _bytes(paths: dict[str, dict[str, int]], calls: tuple[str, ...] | None, kind: str) -> int:
    """Bytes of `kind` (framing-up, body-down, ...) over the given calls (None: all)."""
    return sum(v.get(kind, 0) for p, v in paths.items()
               if calls is None or p.removeprefix(FLEET) in calls)


def compare(summary: dict[str, Any], wire: dict[str, Any]) -> dict[str, Any]:
    """One method's metered bytes against what crossed the SuperNodes' TCP connections."""
    paths = wire["run"]["paths"]
    tcp = wire["run"]["up"] + wire["run"]["down"]
    framing = _bytes(paths, None, "framing-up") + _bytes(paths, None, "framing-down")
    heartbeat = sum(v for k, v in paths.get(FLEET + "send-node-heartbeat", {}).items()
                    if k != "calls")
    # a call's request and response bodies both serve the message it moves
    carrying = {d: _bytes(paths, CARRYING[d], "body-up") + _bytes(paths, CARRYING[d], "body-down")
                for d in ("up", "down")}
    metered = {d: summary["bytes"][f"wire-{d}"] for d in ("up", "down")}
    return {
        "method": summary["method"], "run-s": round(wire["run-s"], 1), "tcp-bytes": tcp,
        "metered-bytes": metered["up"] + metered["down"],
        "http-framing-bytes": framing, "heartbeat-bytes": heartbeat,
        "idle-poll-bytes": _bytes(paths, None, "idle-up") + _bytes(paths, None, "idle-down"),
        "app-bundle-bytes": sum(v for k, v in paths.get(FLEET + "get-fab", {}).items()
                                if k != "calls"),
        "carrying-body-bytes": carrying["up"] + carrying["down"],
        "coverage-up": metered["up"] / carrying["up"] if carrying["up"] else None,
        "coverage-down": metered["down"] / carrying["down"] if carrying["down"] else None,
        "calls": {p.removeprefix(FLEET): v.get("calls", 0) for p, v in paths.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/meter"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--table-only", action="store_true",
                        help="redo the table from the saved wire.json files, run nothing")
    args = parser.parse_args(argv)
    rows = []
    for method in args.methods:
        work = args.out / method
        if not args.table_only:
            report = deploy(work, nodes=3, rounds=2, extra=f'method="{method}" {RUN}',
                            wire_idle_s=args.idle_s)
            (work / "wire.json").write_text(json.dumps(report["wire"], indent=1))
        wire = json.loads((work / "wire.json").read_text())
        (summary_path,) = (work / "out").glob("*/summary.json")
        rows.append(compare(json.loads(summary_path.read_text()), wire))
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    header = ["method", "TCP (bytes)", "metered (bytes)", "metered / TCP",
              "app bundle / TCP", "HTTP framing / TCP", "heartbeats / TCP", "idle polls / TCP",
              "metered / message-moving bodies, up", "down"]
    body = [[r["method"], str(r["tcp-bytes"]), str(r["metered-bytes"]),
             f"{r['metered-bytes'] / r['tcp-bytes']:.3f}",
             f"{r['app-bundle-bytes'] / r['tcp-bytes']:.1%}",
             f"{r['http-framing-bytes'] / r['tcp-bytes']:.1%}",
             f"{r['heartbeat-bytes'] / r['tcp-bytes']:.1%}",
             f"{r['idle-poll-bytes'] / r['tcp-bytes']:.1%}",
             f"{r['coverage-up']:.4f}", f"{r['coverage-down']:.4f}"] for r in rows]
    text = markdown(header, body)
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
