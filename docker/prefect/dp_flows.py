"""Prefect flows that run dp-engine, for the process work pool of the prefect-worker container.

`dp-engine prefect deploy` is not built yet (docs/orchestration.md); until it is, deploy these by
hand (docs/deployment.md, "Prefect"):

    docker compose exec prefect-worker python /srv/dp/prefect/dp_flows.py deploy bank [SYSTEM...]

Each deployment `dp-run/SYSTEM` runs `dp-engine run SYSTEM` (through dp-entrypoint, so the
secrets files are set up as in the engine container); the engine's exit code decides the flow
run's state: 0 Completed, anything else Failed, with the engine's output in the flow run's logs.
"""

import subprocess
import sys

from prefect import flow, get_run_logger

FLOWS_DIR = "/srv/dp/prefect"
POOL = "dp-engine"


@flow(name="dp-run")
def dp_run(system: str, entities: list[str] | None = None, full_refresh: bool = False) -> int:
    log = get_run_logger()
    cmd = ["dp-entrypoint", "run", system]
    for e in entities or []:
        cmd += ["--entity", e]
    if full_refresh:
        cmd.append("--full-refresh")
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout.splitlines():
        log.info("%s", line)
    if proc.returncode != 0:
        raise RuntimeError(f"dp-engine run {system} exited {proc.returncode}")
    return proc.returncode


def deploy(systems: list[str], pool: str = POOL) -> None:
    for system in systems:
        dp_run.from_source(source=FLOWS_DIR, entrypoint="dp_flows.py:dp_run").deploy(
            name=system, work_pool_name=pool, parameters={"system": system}
        )
        print(f"deployed dp-run/{system} on work pool {pool}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "deploy":
        deploy(sys.argv[2:])
    else:
        sys.exit("usage: dp_flows.py deploy SYSTEM...")
