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
