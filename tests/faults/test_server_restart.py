"""The Temporal dev server stopped and started again on the same database file mid-run: the runs
finish. A server of this test's own (not the shared fixture), so stopping it harms nobody else."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.faults.support import (
    WORKER,
    assert_gap_free,
    connect,
    final_view,
    free_port,
    group,
    temporal_server_argv,
    trail,
    worker_env,
)
from tests.helpers import start_pack, steps_by_id, unique, wait_for
from workflows.contract.state import RunResult

RUNS = 5

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: outlive-the-server, version: 1.0.0}
spec:
  steps:
    - {id: a, run: {uses: "builtin:shell", with: {command: "echo a >> trail.txt"}}}
    - {id: nap, run: {uses: "builtin:sleep", with: {seconds: 3}}}
    - {id: b, run: {uses: "builtin:shell", with: {command: "echo b >> trail.txt"}}}
"""


class TestServerRestart:
    async def test_runs_finish_after_the_server_comes_back(self, tmp_path: Path) -> None:
        port = free_port()
        address = f"127.0.0.1:{port}"
        server_argv = temporal_server_argv(tmp_path / "temporal.db", port)
        tq = unique("tq")
        with group(server_argv, dict(os.environ), tmp_path / "temporal.log") as server:
            client = await connect(address)
            with group(WORKER, worker_env(address, tq, tmp_path), tmp_path / "worker.log"):
                handles = [
                    await start_pack(client, tq, PACK, heartbeatTimeoutSeconds=2)
                    for _ in range(RUNS)
                ]
                for handle in handles:
                    await wait_for(handle, lambda s: steps_by_id(s)["nap"].status == "Running")

                server.stop()  # SIGTERM, while every run sleeps in `nap`
                assert not server.alive()
                await asyncio.sleep(2)
                server.start()  # same port, same database file

                client = await connect(address)
                handles = [client.get_workflow_handle(h.id, result_type=RunResult) for h in handles]
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), timeout=90
                )
                views = [await final_view(h) for h in handles]

        assert [r.status for r in results] == ["succeeded"] * RUNS
        for state, logs in views:
            assert [s.status for s in state.steps] == ["Succeeded"] * 3
            lines = trail(tmp_path, "default", state.runId)
            assert lines.count("a") == 1, lines  # done before the stop: kept, not redone
            assert lines.count("b") >= 1, lines
            assert_gap_free(logs)
