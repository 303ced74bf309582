"""The one place flower-gd reaches into Flower's internals (flwr pinned to 1.41), and why.

1. `run_simulation`: flwr 1.41 deprecates the public `run_simulation()`, which cannot pass
   a run config; `flwr run` itself calls the private `_run_simulation` with a `Run` whose
   `override_config` nodes fuse with pyproject's defaults. We make that same call.
2. `act_as_serverapp`: Flower stamps every new Message with the running task's identity
   (`TaskIdentity`), which the SuperLink sets when it starts a ServerApp. Code that builds
   messages outside a running app (the simulation's own ServerApp context, the report's
   sizing of messages, the tests) sets it as the ServerApp's would be.
3. `KeptRayBackend`: the simulation engine builds its Ray backend by name inside
   `start_vce` and shuts Ray down after every run, so each run of a sweep started Ray and
   a fresh pool of workers that imported torch again (about 5 s of a digits run's 12). We
   put a subclass in its place that keeps Ray and the idle workers for the next run in this
   process (same resources only) and lets them go when the process ends. A worker keeps no
   run state: a node's state is on disk and its Context comes with every message.
4. `wake_on_store`: the simulation engine polls its in-memory LinkState every 0.1 s on
   both sides (the ServerApp's grid waiting for replies, the engine fetching one message
   per node per poll; the meter's grid every 0.02 s), so a message round trip waited up to
   0.12 s for nothing, and a node with n queued messages up to n x 0.1 s; on
   digits, where a node's work per message is tens of milliseconds, that was most of a
   run's wall. Both pollers now also wake as soon as the state stores a message for them,
   and the engine fetches again at once while messages are waiting. The 0.1 s timeout
   stays as the fallback; what is delivered, and when a node works, do not change.
"""

from __future__ import annotations

import atexit
import json
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from flwr.clientapp import ClientApp
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
from flwr.serverapp import ServerApp
from flwr.supercore.task_identity import TaskIdentity


def act_as_serverapp(run_id: int = 0, task_id: int = 0) -> None:
    """Let this process build messages as the ServerApp of task `task_id` in run `run_id`."""
    TaskIdentity.run_id = run_id
    TaskIdentity.task_id = task_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID


def ensure_serverapp_identity() -> None:
    """`act_as_serverapp()` unless a task is running in this process already."""
    try:
        TaskIdentity.run_id  # noqa: B018  (raises when no task runs in this process)
    except RuntimeError:
        act_as_serverapp()


def _kept_ray_backend() -> type:
    """A RayBackend whose worker pool outlives the run (see the module's note 3)."""
    import ray
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    class KeptRayBackend(RayBackend):
        kept: dict[str, BasicActorPool] = {}  # resources -> the idle pool left by the previous run

        def _key(self) -> str:
            return json.dumps([self.client_resources, self.actor_kwargs], sort_keys=True)

        def build(self, app_fn: Callable[[], ClientApp]) -> None:
            pool = self.kept.pop(self._key(), None)
            if pool is not None and ray.is_initialized():
                self.pool, self.app_fn = pool, app_fn
                return
            super().build(app_fn)

        def terminate(self) -> None:
            pool = self.pool
            # keep it only when every worker is back (none still busy with this run)
            if pool is not None and len(pool.pool) == pool.num_actors:
                self.kept.clear()
                self.kept[self._key()] = pool
                return
            super().terminate()

    atexit.register(lambda: ray.shutdown() if ray.is_initialized() else None)
    return KeptRayBackend


_INS_STORED = threading.Event()  # the LinkState stored a message for a node
REPLY_STORED = threading.Event()  # ... a reply for the ServerApp (MeteredGrid waits on it)
POLL_FALLBACK_S = 0.1  # Flower's own interval: the longest either side now waits


def wake_on_store() -> None:
    """Install note 4 (idempotent): LinkState stores wake the engine's and the grid's polls."""
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    if getattr(InMemoryLinkState, "_flower_gd_wakes", False):
        return

    def notifying(method: Callable[..., Any], event: threading.Event) -> Callable[..., Any]:
        def store(self: Any, message: Any) -> Any:
            out = method(self, message)
            event.set()
            return out
        return store

    InMemoryLinkState.store_message_ins = notifying(  # type: ignore[method-assign]
        InMemoryLinkState.store_message_ins, _INS_STORED)
    InMemoryLinkState.store_message_res = notifying(  # type: ignore[method-assign]
        InMemoryLinkState.store_message_res, REPLY_STORED)
    InMemoryLinkState._flower_gd_wakes = True  # type: ignore[attr-defined]

    def add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any,
                              f_stop: threading.Event) -> None:
        while not f_stop.is_set():
            _INS_STORED.clear()  # a store after this line wakes the wait below
            fetched = 0
            for node_id in nodes_mapping.keys():
                for msg in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(msg)
                    fetched += 1
            if not fetched:
                _INS_STORED.wait(POLL_FALLBACK_S)

    vce_api.add_messages_to_queue = add_messages_to_queue

def run_simulation(server_app: ServerApp, client_app: ClientApp, run_config: Mapping[str, Any],
                   num_nodes: int, app_dir: str, client_cpus: float, verbose: bool) -> None:
    """Run one ServerApp and `num_nodes` ClientApps on the Ray simulation engine, exactly as
    `flwr run` does for a local simulation, with `run_config` as the run's overrides."""
    import flwr.server.superlink.fleet.vce.backend.raybackend as raybackend
    from flwr.app import Context, RecordDict
    from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.run import Run
    from flwr.supercore.telemetry import EventType

    if raybackend.RayBackend.__name__ != "KeptRayBackend":
        raybackend.RayBackend = _kept_ray_backend()  # type: ignore[misc,assignment]
    wake_on_store()
    run = Run.create_empty(generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    # Nodes fuse pyproject defaults (app_dir) with these overrides, as `flwr run` does.
    run.override_config = dict(run_config)
    act_as_serverapp(run.run_id, run.primary_task_id)
    context = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(),
                      run_config=dict(run_config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _run_simulation(
            num_supernodes=num_nodes,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_name="ray",
            backend_config={"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
                            "init_args": {"include_dashboard": False}},
            app_dir=app_dir,
            is_app=True,  # nodes get pyproject defaults fused with run.override_config
            run=run,
            server_app_context=context,
            verbose_logging=verbose,
        )
