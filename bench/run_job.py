"""Run one job through ``handler.handler`` in this process and print its result and this
process's peak memory as one JSON line (the benchmark starts one process per job, so the
peak belongs to that job alone)."""

from __future__ import annotations

import asyncio
import json
import resource
import sys

import runpod

import handler


def main() -> None:
    job = json.loads(sys.argv[1])
    runpod.serverless.progress_update = lambda job, payload: None  # no RunPod to report to
    result = asyncio.run(handler.handler(job))
    usage_self = resource.getrusage(resource.RUSAGE_SELF)
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "result": result,
                "peak_rss_mb": usage_self.ru_maxrss / 1024,
                "peak_child_rss_mb": usage_children.ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
