"""ServerApp: validates the run config, meters the Grid, runs the method, saves the results."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flower_gd import methods
from flower_gd.byzantine import byzantine_partitions
from flower_gd.config import RunConfig
from flower_gd.faults import FaultyGrid
from flower_gd.metering import MeteredGrid
from flower_gd.method import ServerRun
from flower_gd.results import RunRecorder, is_finished

app = ServerApp()


def run_dir_for(cfg: RunConfig) -> Path:
    """`<output-dir>/<run-name>`, absolute, so every node writes under the same root."""
    return (Path(cfg.output_dir).expanduser() / methods.run_name(cfg)).resolve()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """One experiment: the strategy talks to nodes only through the metered Grid."""
    cfg = methods.load_config(context.run_config)
    method = methods.get(cfg.method)
    run_dir = run_dir_for(cfg)
    if is_finished(run_dir, cfg.to_mapping()):
        print(f"{run_dir} is finished already (summary.json exists); delete it to rerun")
        return
    meter = MeteredGrid(grid)
    # message-loss sits above the meter: a lost message was still sent (and is metered)
    faulty = FaultyGrid(meter, cfg.message_loss, cfg.seed) if cfg.message_loss else None
    recorder = RunRecorder(run_dir, cfg.to_mapping(), meter, cfg.model_for, faults=faulty,
                           byzantine=byzantine_partitions(cfg.seed, cfg.num_nodes,
                                                          cfg.byzantine_nodes))
    if faulty is not None:  # which messages are lost follows the nodes' partitions
        faulty.partition_of = recorder.partition_of_id
    if recorder.resumed is not None:
        print(f"{run_dir}: resuming after round {recorder.resumed.round}")
    extra = method.run(ServerRun(cfg, str(run_dir), faulty or meter, recorder))
    leak = cfg.label_source == "ground-truth" and "label-source" in method.reads
    summary = recorder.finalize({"label-leak": leak, **extra})
    print(f"results: {run_dir} final median accuracy {summary['final']['median']:.4f}")
