"""gossip-adaptive: the weighted mix by hand, node steps on digits, push-sum mass, relays."""

from dataclasses import replace

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from payload_edit import rewrite

from flower_gd import methods
from flower_gd.codecs import (
    PAYLOAD_KEY,
    decode_payload,
    decode_sample_weights,
    payload_key,
)
from flower_gd.config import ConfigError, RunConfig, load_defaults, merge_overrides
from flower_gd.distill import density_ratio, weighted_mix
from flower_gd.node import Node
from strategies import gossip
from strategies import gossip_adaptive as ga
from strategies.gossip_adaptive import GossipAdaptive
from strategies.relay import DELIVERED_KEY, FANOUT_KEY

SMALL = {"method": "gossip-adaptive", "num-nodes": 4, "local-epochs": 2, "disc-epochs": 1,
         "common-limit": 120, "test-limit": 60, "partition-scheme": "niid1"}


def _node(tmp_path, pid, **overrides):
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {**SMALL, **overrides}))
    return Node(cfg, pid, cfg.num_nodes, str(tmp_path))


def _at(node, server_round):
    """The node handling a message of `server_round`."""
    return replace(node, server_round=server_round)


def _request(pullers=None, delivered=(), content=None):
    """A relay message's content with its receipts: the fan-out of this answer (share) and
    the fan-outs of the node's answers delivered earlier in the round."""
    content = RecordDict() if content is None else content
    config = {FANOUT_KEY: pullers} if pullers is not None else {}
    if delivered:
        config[DELIVERED_KEY] = list(delivered)
    content["config"] = ConfigRecord(config)
    return content


def _share(node, pullers, delivered=()):
    return ga.share(node, _request(pullers, delivered))


def _step(node, server_round, content=None, delivered=()):
    return ga.gossip_step(_at(node, server_round), _request(None, delivered, content))


def test_weighted_mix_against_a_hand_computed_example():
    b_i = np.array([[1.0, 0.0], [0.5, 0.5]])
    w_i = np.array([3.0, 0.0])
    b_j = np.array([[0.0, 1.0], [0.2, 0.8]])
    w_j = np.array([1.0, 0.0])
    b_k = np.array([[0.5, 0.5], [1.0, 0.0]])
    w_k = np.array([4.0, 0.0])
    mixed, total = weighted_mix(b_i, w_i, [b_j, b_k], [w_j, w_k])
    # sample 0: (3*[1,0] + 1*[0,1] + 4*[.5,.5]) / 8 = [5/8, 3/8]; sample 1: all weights 0,
    # so the plain mean [(0.5+0.2+1)/3, (0.5+0.8+0)/3]
    np.testing.assert_allclose(mixed, [[5 / 8, 3 / 8], [1.7 / 3, 1.3 / 3]], rtol=1e-6)
    np.testing.assert_allclose(total, [8.0, 0.0])


def test_density_ratio_is_d_over_one_minus_d_clipped():
    np.testing.assert_allclose(density_ratio(np.array([0.5, 0.8, 0.0, 1.0])),
                               [1.0, 4.0, 1e-4 / (1 - 1e-4), (1 - 1e-4) / 1e-4])


def test_local_phase_stores_belief_weights_and_model(tmp_path):
    node = _node(tmp_path, 0)
    metrics = ga.local_phase(node)
    belief = node.store.snapshot().array(ga.BELIEF)
    weights = node.store.snapshot().array(ga.SAMPLE_WEIGHTS)
    assert belief.shape == (120, 10) and weights.shape == (120,)
    np.testing.assert_allclose(belief.sum(1), 1.0, rtol=1e-5)
    assert (weights > 0).all() and node.store.snapshot().has_model()
    assert metrics["median-weight"] == pytest.approx(float(np.median(weights)))


def _relay(*contents):
    """What the relay forwards: several share replies renamed payload 0, 1, ..."""
    out = RecordDict()
    for i, c in enumerate(contents):
        out[payload_key(i)] = c[PAYLOAD_KEY]
    return out


def test_push_sum_conserves_weight_and_the_step_mixes_then_distils(tmp_path, monkeypatch):
    a, b, c = (_node(tmp_path, p) for p in range(3))
    for n in (a, b, c):
        ga.local_phase(n)
    w = {n.partition_id: n.store.snapshot().array(ga.SAMPLE_WEIGHTS) for n in (a, b, c)}
    bel = {n.partition_id: n.store.snapshot().array(ga.BELIEF) for n in (a, b, c)}
    before = sum(w.values())
    # b is pulled by two nodes this round: it sends a third of its weight to each; answering
    # changes nothing on disk (the relay tells b in its step which answers arrived)
    sent_b = _share(b, 2)
    np.testing.assert_array_equal(b.store.snapshot().array(ga.SAMPLE_WEIGHTS), w[1])
    sent_c = _share(c, 1)
    seen = {}
    real = ga.train_soft

    def spy(model, x, target, *args, **kwargs):
        seen["target"] = target.copy()
        return real(model, x, target, *args, **kwargs)

    monkeypatch.setattr(ga, "train_soft", spy)
    metrics = _step(a, 1, _relay(sent_b, sent_c))
    assert metrics["peers"] == 2
    w_b, w_c = w[1] / 3, w[2] / 2
    expect = ((w[0][:, None] * bel[0] + w_b[:, None] * bel[1] + w_c[:, None] * bel[2])
              / (w[0] + w_b + w_c)[:, None])
    np.testing.assert_allclose(seen["target"], expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.store.snapshot().array(ga.BELIEF), expect, rtol=1e-5, atol=1e-6)
    # b and c book their splits in their own steps (no payload reached them this round)
    assert _step(b, 1, delivered=[2])["peers"] == 0
    _step(c, 1, delivered=[1])
    np.testing.assert_allclose(b.store.snapshot().array(ga.SAMPLE_WEIGHTS), w[1] / 3, rtol=1e-6)
    # mass: a holds w_a + w_b/3 + w_c/2, b keeps w_b/3, c keeps w_c/2; one share of b is still
    # "in flight" to its second puller
    after = sum(n.store.snapshot().array(ga.SAMPLE_WEIGHTS) for n in (a, b, c)) + w[1] / 3
    np.testing.assert_allclose(after, before, rtol=1e-5)
    assert a.store.snapshot().meta["counter"] == 2


def test_a_second_answer_in_a_round_splits_what_the_first_left(tmp_path):
    b = _node(tmp_path, 1)
    ga.local_phase(b)
    w = b.store.snapshot().array(ga.SAMPLE_WEIGHTS)
    first = decode_payload(_share(b, 1), (120, 10)).sample_weights
    second = decode_payload(_share(b, 2, delivered=[1]), (120, 10)).sample_weights
    np.testing.assert_allclose(first, w / 2, rtol=1e-6)
    np.testing.assert_allclose(second, w / 2 / 3, rtol=1e-6)
    _step(b, 1, delivered=[1, 2])
    kept = b.store.snapshot().array(ga.SAMPLE_WEIGHTS)
    np.testing.assert_allclose(kept + first + 2 * second, w, rtol=1e-6)  # nothing lost


def test_accumulate_does_not_touch_the_sender(tmp_path):
    b = _node(tmp_path, 1, **{"gossip-bookkeeping": "accumulate"})
    ga.local_phase(b)
    w = b.store.snapshot().array(ga.SAMPLE_WEIGHTS)
    _share(b, 3)
    np.testing.assert_array_equal(b.store.snapshot().array(ga.SAMPLE_WEIGHTS), w)


def test_reinfer_replaces_the_belief_with_the_models_list(tmp_path):
    a, b = (_node(tmp_path, p, **{"gossip-share": "reinfer"}) for p in range(2))
    ga.local_phase(a)
    ga.local_phase(b)
    _step(a, 1, _relay(_share(b, 1)))
    from flower_gd.training import infer, softmax
    np.testing.assert_allclose(a.store.snapshot().array(ga.BELIEF),
                               softmax(infer(a.load_model(), a.data.common_x)), rtol=1e-5)


@pytest.mark.parametrize("codec", ["uint8", "topk", "hard", "float16"])
def test_compact_codecs_flow_through_a_step(tmp_path, codec):
    a, b = (_node(tmp_path, p, codec=codec) for p in range(2))
    ga.local_phase(a)
    ga.local_phase(b)
    sent = _share(b, 1)
    got = decode_payload(sent, (120, 10))  # what a receives: b's belief as the codec left it
    assert _step(a, 1, _relay(sent))["peers"] == 1
    own = a.store.snapshot(0)
    mixed, total = weighted_mix(own.array(ga.BELIEF), own.array(ga.SAMPLE_WEIGHTS),
                                [got.scores], [got.sample_weights])
    np.testing.assert_allclose(a.store.snapshot(1).array(ga.BELIEF), mixed, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(a.store.snapshot(1).array(ga.SAMPLE_WEIGHTS), total, rtol=1e-9)


def _state(node, server_round):
    snap = node.store.snapshot(server_round)
    return {name: (snap.root / name).read_bytes()
            for name in ("model.pt", f"{ga.BELIEF}.npy", f"{ga.SAMPLE_WEIGHTS}.npy")}


@pytest.mark.parametrize("what, reason", [
    ("gossip node", "lacks the weights this receiver needs"),
    ("counter 0", "counter 0 out of range"),
    ("logits", "carries logits, this receiver mixes probs"),
])
def test_a_refused_payload_leaves_belief_weights_and_model_as_they_were(
        tmp_path, caplog, what, reason):
    a, b = _node(tmp_path, 0), _node(tmp_path, 1)
    ga.local_phase(a)
    if what == "gossip node":
        gossip.local_phase(b)  # a plain gossip node: no per-sample weights
        bad = gossip.share(b)
    else:
        ga.local_phase(b)
        bad = _share(b, 1)
        if what == "counter 0":
            rewrite(bad, counter=0)
        else:
            rewrite(bad, kind="logits")  # float32 values, claimed to be logits
    before = _state(a, 0)
    own = a.store.snapshot(0).array(ga.SAMPLE_WEIGHTS)
    metrics = _step(a, 1, _relay(bad))
    assert metrics["peers"] == 0 and metrics["payload-rejected"] == 1
    assert reason in caplog.text
    # belief and model are the node's previous ones, byte for byte
    after = _state(a, 1)
    assert after["model.pt"] == before["model.pt"]
    assert after[f"{ga.BELIEF}.npy"] == before[f"{ga.BELIEF}.npy"]
    # its weights took the refused payload's mass when that alone was valid (push-sum keeps
    # the fleet's total), and stayed as they were when there was none to take
    got = a.store.snapshot(1).array(ga.SAMPLE_WEIGHTS)
    if what == "gossip node":
        np.testing.assert_array_equal(got, own)
    else:
        sent = decode_sample_weights(bad, a.store.snapshot(0).array(ga.BELIEF).shape)
        np.testing.assert_allclose(got, own + sent, rtol=1e-12)


def test_relay_picks_k_distinct_peers_never_itself():
    relay = GossipAdaptive("/tmp/x", 5, peers=3, seed=1)
    pulls = relay.choose_peers([11, 12, 13, 14, 15], k=3)
    for dst, srcs in pulls.items():
        assert len(srcs) == 3 == len(set(srcs)) and dst not in srcs
    with pytest.raises(ValueError, match="peers=5"):
        GossipAdaptive("/tmp/x", 5, peers=5)


def test_config_refuses_impossible_options():
    base = merge_overrides(load_defaults(), {"method": "gossip-adaptive"})
    with pytest.raises(ConfigError,
                       match="gossip-peers=10 needs at least 11 nodes.*set gossip-peers=9"):
        methods.load_config({**base, "gossip-peers": 10})
    # a method that pulls no peers does not care how many it would pull
    methods.load_config({**base, "method": "dlad", "num-nodes": 2})
    with pytest.raises(ConfigError, match="gossip-peers=3 with topology=ring.*set "
                                          "gossip-peers=2 or topology=complete"):
        methods.load_config({**base, "gossip-peers": 3, "topology": "ring"})
    with pytest.raises(ConfigError, match="cannot carry logits"):
        RunConfig.from_mapping({**base, "codec": "uint8", "inference-output": "logits",
                                "method": "gossip"})
    with pytest.raises(ConfigError, match="gossip-bookkeeping='push'"):
        RunConfig.from_mapping({**base, "gossip-bookkeeping": "push"})
    # gossip-adaptive always shares probabilities: a sweep's inference-output=logits (for
    # gossip) is ignored with a warning, not refused
    with pytest.warns(UserWarning, match=r"method=gossip-adaptive ignores \['inference-output'\]"):
        methods.load_config({**base, "inference-output": "logits"})


def test_run_names_carry_the_settings_so_sweeps_do_not_collide():
    base = merge_overrides(load_defaults(), {"method": "gossip-adaptive"})
    cfg = methods.load_config({**base, "codec": "topk", "codec-topk": 3, "gossip-peers": 3,
                               "gossip-bookkeeping": "accumulate"})
    assert methods.run_name(cfg) == ("gossip-adaptive_digits_iid_cnn_codec=topk_codec-topk=3_"
                                     "gossip-bookkeeping=accumulate_gossip-peers=3_s0")
    assert methods.run_name(methods.load_config(base)) == "gossip-adaptive_digits_iid_cnn_s0"


def test_a_fresh_student_starts_from_a_new_model_once(tmp_path, monkeypatch):
    a, b = (_node(tmp_path, p, **{"gossip-student": "fresh"}) for p in range(2))
    ga.local_phase(a)
    ga.local_phase(b)
    local = a.load_model().state_dict()
    fresh = a.new_model().state_dict()
    seen = []
    real = ga.train_soft

    def spy(model, *args, **kwargs):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(ga, "train_soft", spy)
    _step(a, 1, _relay(_share(b, 1)))
    assert all((seen[0][k] == fresh[k]).all() for k in fresh)  # round 1: a new model
    assert not all((seen[0][k] == local[k]).all() for k in local)
    after_round_1 = a.load_model().state_dict()
    _step(a, 2, _relay(_share(b, 1)))
    assert all((seen[1][k] == after_round_1[k]).all() for k in after_round_1)  # continued
