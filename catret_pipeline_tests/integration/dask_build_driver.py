"""Driver of test_dask_build.py: one whole build on DATA_DIR, configured by the environment.

Run as ``python -m catret_pipeline_tests.integration.dask_build_driver DATA_DIR``. The build goes
through ``catret materialize``'s own ``execute_build`` (in this process, or one Dask task per
step with ``CATRET_EXECUTOR=dask``), with a run config that keeps fusion training short; the
last stdout line is a JSON summary: success, wall seconds, this process's pid, the pid each step
started in.
"""

import json
import os
import sys
import time

from catret_pipeline.cli.environment import export_env, prepare_data_dir
from catret_pipeline.cli.instance import open_instance
from catret_pipeline.cli.materialize import execute_build
from catret_pipeline.config import CatretConfig
from catret_pipeline.definitions import build_definitions

#: Two epochs (the point is that both builds train the same heads, not good ones) in the step's
#: own process: the training pool costs ~30 s of torch imports per build on 2 cores. A child
#: process started inside a Dask worker step is tested in workers/test_dask_executor.py.
RUN_CONFIG = {"ops": {"fusion_models": {"config": {"epochs": 2, "min_steps": 0, "workers": 1}}}}


def main(data_dir: str) -> None:
    config = CatretConfig.from_env().with_data_dir(data_dir)
    export_env(config, offline_hub=True)
    config = config.overridden({"DAGSTER_HOME": str(config.instance_home)})
    prepare_data_dir(config)
    instance = open_instance(config.instance_home)
    started = time.monotonic()
    result = execute_build(config, build_definitions(config=config), None, RUN_CONFIG, instance)
    seconds = time.monotonic() - started
    pids = {e.step_key: e.pid for e in result.all_events if e.is_step_start}
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    summary = {
        "success": result.success,
        "seconds": round(seconds, 1),
        "pid": os.getpid(),
        "step_pids": pids,
        "failed": failed,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
