"""The relay's peer choice: one pull or k, complete graph or ring, reproducible from the seed."""

import pytest

from strategies.relay import PullRelay

IDS = [101 + 7 * p for p in range(5)]  # node ids Flower might hand out, one per partition


def _relay(topology: str, seed: int = 3, peers: int = 1) -> PullRelay:
    relay = PullRelay("/unused", len(IDS), topology=topology, seed=seed, peers=peers)
    relay.partition_of = {node: p for p, node in enumerate(IDS)}
    return relay


def test_a_single_pull_is_one_other_node_and_reaches_every_peer_over_rounds():
    relay = _relay("complete")
    seen: dict[int, set[int]] = {n: set() for n in IDS}
    for _ in range(200):
        pulls = relay.choose_peers(IDS, k=1)
        assert set(pulls) == set(IDS)
        for dst, srcs in pulls.items():
            assert len(srcs) == 1 and srcs[0] != dst and srcs[0] in IDS
            seen[dst].add(srcs[0])
    assert all(seen[n] == set(IDS) - {n} for n in IDS)


def test_the_ring_pulls_only_from_the_two_neighbours_by_partition():
    relay = _relay("ring")
    for _ in range(50):
        for dst, (src,) in relay.choose_peers(IDS, k=1).items():
            step = (relay.partition_of[src] - relay.partition_of[dst]) % len(IDS)
            assert step in (1, len(IDS) - 1)
    for dst, srcs in relay.choose_peers(IDS, k=2).items():  # k = 2: both neighbours
        steps = {(relay.partition_of[s] - relay.partition_of[dst]) % len(IDS) for s in srcs}
        assert steps == {1, len(IDS) - 1}


def test_the_same_seed_makes_the_same_pulls_and_another_seed_others():
    a, b, c = _relay("complete", seed=5), _relay("complete", seed=5), _relay("complete", seed=6)
    rounds_a = [a.choose_peers(IDS, k=2) for _ in range(5)]
    assert rounds_a == [b.choose_peers(IDS, k=2) for _ in range(5)]
    assert rounds_a != [c.choose_peers(IDS, k=2) for _ in range(5)]


def test_impossible_settings_are_refused():
    with pytest.raises(ValueError, match="topology='star'"):
        PullRelay("/unused", 5, topology="star")
    with pytest.raises(ValueError, match="peers=5"):
        PullRelay("/unused", 5, peers=5)


def test_next_larger_pulls_only_from_the_next_larger_family_and_the_largest_from_anyone():
    from flower_gd.models import parameter_count
    families = ["cnn", "cnn-wide", "mobilenet_v3_small"]  # round-robin over the 5 partitions
    assert parameter_count("cnn") < parameter_count("cnn-wide") < parameter_count(
        "mobilenet_v3_small")
    relay = PullRelay("/unused", len(IDS), seed=3, peers=1, assist="next-larger",
                      family_of=lambda p: families[p % 3])
    relay.partition_of = {node: p for p, node in enumerate(IDS)}
    family = {node: families[p % 3] for p, node in enumerate(IDS)}
    seen: dict[int, set[str]] = {n: set() for n in IDS}
    for _ in range(100):
        for dst, (src,) in relay.choose_peers(IDS, k=1).items():
            seen[dst].add(family[src])
    for node in IDS:
        want = {"cnn": {"cnn-wide"}, "cnn-wide": {"mobilenet_v3_small"},
                # the largest family: every other node (partition 2 has no peer of its own)
                "mobilenet_v3_small": {"cnn", "cnn-wide"}}[family[node]]
        assert seen[node] == want
    with pytest.raises(ValueError, match="next-larger needs family_of"):
        PullRelay("/unused", 5, assist="next-larger")


def test_a_node_with_fewer_candidates_than_peers_pulls_them_all_and_says_so(caplog):
    families = ["cnn", "cnn-wide", "mobilenet_v3_small"]  # partition 2 is the only mobilenet
    relay = PullRelay("/unused", len(IDS), seed=3, peers=2, assist="next-larger",
                      family_of=lambda p: families[p % 3])
    relay.partition_of = {node: p for p, node in enumerate(IDS)}
    for _ in range(3):
        pulls = relay.choose_peers(IDS, k=2)
    # the cnn-wide partitions 1 and 4 have one mobilenet to pull from, not two
    assert pulls[IDS[1]] == pulls[IDS[4]] == [IDS[2]]
    warned = [r.getMessage() for r in caplog.records if "candidate peer" in r.getMessage()]
    assert warned == [f"partition {p} has 1 candidate peer(s) under complete and next-larger: "
                      "it pulls 1, not 2" for p in (1, 4)]  # once per node and run


def test_a_node_left_alone_pulls_nobody_instead_of_failing():
    relay = _relay("complete", peers=1)
    assert relay.choose_peers([IDS[0]], k=1) == {IDS[0]: []}  # min-nodes=1, the others dead


# ------------------------------------------------------------- re-sending what was lost
class ScriptedGrid:
    """Answers each message by its node's next scripted outcome: `ok` (a reply), `lost`
    (MESSAGE_UNAVAILABLE, a loss either way), `dead` (NODE_UNAVAILABLE), `raised` (the
    ClientApp raised) or `silent` (no reply before the timeout); `ok` once the script ends.
    Evaluations are always answered."""

    def __init__(self, script: dict[int, list[str]]) -> None:
        self.script = {n: list(s) for n, s in script.items()}
        self.sent: dict[tuple[int, str], int] = {}

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message, MetricRecord, RecordDict
        from flwr.common.constant import ErrorCode
        codes = {"lost": ErrorCode.MESSAGE_UNAVAILABLE, "dead": ErrorCode.NODE_UNAVAILABLE,
                 "raised": ErrorCode.CLIENT_APP_RAISED_EXCEPTION}
        out = []
        for m in messages:
            node, kind = m.metadata.dst_node_id, m.metadata.message_type
            m.metadata.__dict__["_message_id"] = f"{kind}-{node}-{self.sent.get((node, kind), 0)}"
            self.sent[node, kind] = self.sent.get((node, kind), 0) + 1
            script = self.script.get(node, []) if kind != "evaluate" else []
            outcome = script.pop(0) if script else "ok"
            if outcome == "ok":
                out.append(Message(RecordDict({"metrics": MetricRecord(
                    {"partition-id": IDS.index(node), "accuracy": 0.5, "loss": 1.0})}),
                    reply_to=m))
            elif outcome != "silent":
                out.append(Message(Error(code=codes[outcome], reason=outcome), reply_to=m))
        return out[::-1]  # in any order


@pytest.mark.usefixtures("task_identity")
def test_a_lost_or_unanswered_local_phase_is_sent_again_and_a_dead_or_failing_node_is_not():
    from strategies.relay import LOCAL
    relay = PullRelay("/unused", len(IDS), seed=3, min_nodes=2)
    relay.node_ids = list(IDS)
    grid = ScriptedGrid({IDS[0]: ["lost", "lost"], IDS[1]: ["silent"], IDS[2]: ["dead"],
                         IDS[3]: ["raised"]})
    relay.with_state = lambda grid, nodes, timeout: {}  # nobody silent holds state
    relay.local_phase(grid, timeout=60)
    sends = {IDS.index(n): k for (n, kind), k in grid.sent.items() if kind == LOCAL}
    assert sends == {0: 3, 1: 2, 2: 1, 3: 1, 4: 1}
    # the lost and the unanswered took part in the end; the dead and the failing did not
    assert sorted(relay.partition_of[n] for n in relay.node_ids) == [0, 1, 4]


@pytest.mark.usefixtures("task_identity")
def test_re_sending_gives_up_after_step_attempts():
    from strategies.relay import LOCAL, STEP_ATTEMPTS
    relay = PullRelay("/unused", len(IDS), seed=3, min_nodes=2)
    relay.node_ids = list(IDS)
    grid = ScriptedGrid({IDS[0]: ["lost"] * (STEP_ATTEMPTS + 5)})
    relay.with_state = lambda grid, nodes, timeout: {}
    relay.local_phase(grid, timeout=60)
    assert grid.sent[IDS[0], LOCAL] == STEP_ATTEMPTS
    assert IDS[0] not in relay.node_ids and len(relay.node_ids) == 4
