"""`flower-gd`: run experiments (or Hydra sweeps) through the Flower simulation engine."""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from flower_gd.config import ConfigError, load_defaults

ConfigStore.instance().store(name="base", node={"app": load_defaults()})


def to_run_config(cfg: DictConfig) -> dict[str, Any]:
    """The one place a Hydra config becomes a Flower run config (dashed keys, plain types)."""
    app = OmegaConf.to_container(cfg.app, resolve=True)
    if not isinstance(app, dict):
        raise ConfigError(f"the Hydra config's `app` must be a mapping of run-config keys, "
                          f"not {type(app).__name__}")
    return {str(k): v for k, v in app.items()}


@hydra.main(version_base=None, config_path="conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    from flower_gd.experiment import run_experiment

    summary = run_experiment(to_run_config(cfg), client_cpus=float(cfg["client-cpus"]),
                             verbose=bool(cfg.verbose), reuse_stale=bool(cfg["reuse-stale"]))
    final = summary["final"]
    print(f"{summary['method']} {summary['dataset']} {summary['partition-scheme']}: "
          f"median accuracy {final['median']:.4f} (min {final['min']:.4f}, "
          f"max {final['max']:.4f}) after {summary['rounds']} round(s)")


def main() -> None:
    """Console entry point; config errors print one clear line instead of a traceback."""
    try:
        _main()
    except ConfigError as err:
        print(f"flower-gd: configuration error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
