"""The restarter: started by a container's logger (detached) once the container's first process ended, it applies
the container's restartPolicy with no orchestr command running: Always restarts, OnFailure restarts after a
non-zero exit, Never (no restarter is started) and a container orchestr stopped or deleted stay as they are.
Restarts back off (0.1 s doubling up to 10 s) while a container keeps ending within 10 s of its start.

Run as `python -I restart.py <log dir> <container id>`, with orchestr installed in that Python.
"""

from __future__ import annotations

import sys


async def restart(directory: str, id: str) -> None:
    import json
    import os
    import time

    import anyio

    from orchestr.containers import rfc3339
    from orchestr_containerd.client import Connection
    from orchestr_containerd.proto import containers_pb2, task_pb2, tasks_pb2
    from orchestr_containerd.logger import STOPPED
    from orchestr_containerd.runtime import I_POLICY, I_RESTARTS, I_STARTED, start_task

    with open(os.path.join(directory, "logger.json")) as f:
        config = json.load(f)
    conn = Connection(config["address"], config["namespace"])
    try:
        task = (await conn.tasks.Get(tasks_pb2.GetRequest(container_id=id), metadata=conn.metadata)).process
        if task.status != task_pb2.STOPPED:
            return
        c = (await conn.containers.Get(containers_pb2.GetContainerRequest(id=id), metadata=conn.metadata)).container
        policy = c.labels.get(I_POLICY, "Never")
        stopped = os.path.join(directory, STOPPED)
        if os.path.exists(stopped) or policy == "Never" or (policy == "OnFailure" and
                                                                      task.exit_status == 0):
            return
        restarts = int(c.labels.get(I_RESTARTS) or 0)
        ran = time.time() - _seconds(c.labels.get(I_STARTED))
        if ran < 10:
            await anyio.sleep(min(10.0, 0.1 * 2 ** min(restarts, 7)))
            c = (await conn.containers.Get(containers_pb2.GetContainerRequest(id=id),
                                           metadata=conn.metadata)).container
            if os.path.exists(stopped):
                return
        labels = {I_RESTARTS: str(restarts + 1), I_STARTED: rfc3339()}
        await conn.containers.Update(containers_pb2.UpdateContainerRequest(
            container=containers_pb2.Container(id=id, labels=labels),
            update_mask={"paths": [f"labels.{k}" for k in labels]}), metadata=conn.metadata)
        logger = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(directory))),
                              "orchestr-containerd-logger")
        await start_task(conn, c, task, logger)
    finally:
        await conn.close()


def _seconds(stamp: str | None) -> float:
    import calendar
    import time

    if not stamp:
        return 0.0
    try:
        whole, _, fraction = stamp.rstrip("Z").partition(".")
        return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{fraction or 0}")
    except ValueError:
        return 0.0


def main(argv: list[str]) -> None:
    import anyio

    anyio.run(restart, argv[0], argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
