"""A two-node Ray cluster on this machine, run as its own process by the scale-out test.

    python tests/integration/two_node_cluster.py TEMP_DIR GCS_PORT

The head and one worker node are real Ray nodes (their own raylets and object stores), started by
``ray.cluster_utils.Cluster`` with a private temp dir. The process prints one JSON line with the
addresses and node IDs, then obeys commands on standard input, one per line:

    kill-worker  -> {"killed": true}: every process of the worker node is killed at once
    (end of input) shuts the cluster down.
"""

from __future__ import annotations

import json
import os
import socket
import sys

from ray.cluster_utils import Cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    temp_dir, gcs_port = sys.argv[1], int(sys.argv[2])
    # Cluster writes the address file for `ray.init()` to Ray's default temp dir whatever
    # temp_dir says, and fails where /tmp/ray does not exist: under the private folder instead.
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"), exist_ok=True)
    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "gcs_server_port": gcs_port, "temp_dir": temp_dir, "include_dashboard": True,
        "dashboard_port": dashboard_port, "dashboard_host": "127.0.0.1",
    })
    worker = cluster.add_node(num_cpus=2)
    print(json.dumps({"gcs_address": cluster.address, "dashboard": f"http://127.0.0.1:{dashboard_port}",
                      "head": cluster.head_node.node_id, "worker": worker.node_id}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "kill-worker":
                cluster.remove_node(worker, allow_graceful=False)
                print(json.dumps({"killed": True}), flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
