"""RayCluster: joins a Ray cluster, or starts one on this machine, and starts Serve on it.

`local` starts a cluster bound to 127.0.0.1 (Ray otherwise binds the machine's network
address) without its dashboard, and shuts it down on exit; `auto` and `ray://host:10001`
join a running cluster and only disconnect on exit. Serve starts with its own HTTP and gRPC
proxies off: blazerpc's server is the front door (docs/scale-out.md says why).
"""

from __future__ import annotations

import logging
import os
from types import TracebackType

import ray
from ray import serve
from ray._private import ray_constants

__all__ = ("RayCluster",)


class RayCluster:
    """`with RayCluster("local"): ...` — Ray and Serve ready inside the block."""

    def __init__(self, address: str = "local", *, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        """For `local`: the CPUs the cluster offers (default: this machine's)."""
        self._joined = False

    @property
    def is_local(self) -> bool:
        """Whether this process started the cluster (and so stops it)."""
        return self.address == "local"

    def start(self) -> None:
        """Connect (or start the local cluster), then start Serve without its proxies."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves here
        if self.is_local:
            _bind_to_loopback()
            ray.init(
                address="local",
                num_cpus=self.num_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        self._joined = True
        serve.start(proxy_location="Disabled")

    def stop(self) -> None:
        """Shut the local cluster down, or leave the joined one as it was."""
        if not self._joined:
            return
        self._joined = False
        if self.is_local:
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()

    def __enter__(self) -> RayCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _bind_to_loopback() -> None:
    """Make a local cluster's processes use 127.0.0.1 as the node's address.

    Ray replaces a 127.0.0.1 `_node_ip_address` with the machine's network address, except
    where it does not support clusters (its RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER switch). The
    variable reaches the processes Ray starts; this process read it at import, so it is told
    too. Ray Serve's replicas still open an internal gRPC port on every interface (hard-coded
    in Ray): docs/scale-out.md says to firewall it.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
