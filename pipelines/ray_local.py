"""Every Ray cluster geoxai starts is closed: token auth, loopback sockets, a private temp dir.

Ray 2.60 checks a shared secret on every gRPC and HTTP call when ``RAY_AUTH_MODE=token``;
the token is read from ``RAY_AUTH_TOKEN`` by every Ray process, and the processes a local
cluster spawns inherit it from the driver's environment. A fresh random token is made for
each local cluster: it lives only in the environment of the run's processes (never in a file,
a log line, a runtime env or an output).

Where the sockets go:

* a single-node cluster (:func:`init_local`, what ``geoxai run`` starts) runs in Ray's
  local-only mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``): its node address is 127.0.0.1,
  and then every Ray server (GCS, raylet, core workers, dashboard agent, runtime-env agent,
  the metrics and autoscaler HTTP endpoints) binds 127.0.0.1 only;
* a multi-node cluster (``ray start`` with ``--node-ip-address``, the test fixture's 127.0.0.2
  and 127.0.0.3): Ray's C++ gRPC servers (GCS, raylet, core workers) and the dashboard agent's
  gRPC port bind all interfaces (``::``) whatever the node address; they refuse any call
  without the token. The Prometheus endpoints (agent metrics export, dashboard and autoscaler
  metrics) also bind ``0.0.0.0``; they serve read-only metrics and no code execution. Ray has
  no option to bind either to a given address; only the local-only mode above does.

The temp dir (logs, sockets, spilled objects) sits in a new private directory (mode 0700)
under ``$GEOXAI_RAY_TMPDIR`` (default: the system temp dir), never in the shared ``/tmp/ray``.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["new_token", "private_temp_dir", "secure_env", "init_local", "LOOPBACK"]

LOOPBACK = "127.0.0.1"
_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def new_token() -> str:
    """A fresh random token (256 bits, hex) for one cluster."""
    return secrets.token_hex(32)


def private_temp_dir(base: str | os.PathLike[str] | None = None) -> str:
    """A Ray temp dir for one cluster, inside a new private (0700) directory.

    Ray makes its temp dir and every folder in it world-writable (``chmod 0777``, so nodes
    run by other users can share it); the private parent is what keeps other users out of
    its logs, sockets and spilled objects. Returns ``<base>/gxr-XXXXXXXX/ray``.

    Args:
        base: where to create it; default ``$GEOXAI_RAY_TMPDIR`` or the system temp dir.
            Short paths keep Ray's unix socket paths under the 107-byte limit.
    """
    parent = Path(base or os.environ.get("GEOXAI_RAY_TMPDIR") or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    private = tempfile.mkdtemp(prefix="gxr-", dir=parent)  # mkdtemp creates it 0700
    os.chmod(private, 0o700)
    return os.path.join(private, "ray")


def secure_env(env: MutableMapping[str, str], token: str) -> MutableMapping[str, str]:
    """Set token auth in ``env`` (``os.environ`` or a subprocess env) and return it."""
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = token
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _reload_auth() -> None:
    """Make this process's Ray core see the token now in ``os.environ`` (it caches both the
    auth mode and the token after the first cluster)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def init_local(
    *,
    num_cpus: int | None,
    runtime_env: dict | None = None,
    node_ip: str | None = None,
) -> str:
    """Start a closed single-node Ray for this process (``ray.init``); return its temp dir.

    Args:
        num_cpus: CPUs the node offers; None = all of this machine's.
        runtime_env: Ray runtime env for the job (no secrets in it: Ray logs it).
        node_ip: node address; default 127.0.0.1 in Ray's local-only mode (every socket on
            loopback). Another address (``GEOXAI_RAY_NODE_IP``) keeps token auth but lets Ray
            bind its gRPC servers to all interfaces (see the module docstring).
    """
    import ray
    import ray._private.ray_constants as ray_constants

    temp_dir = private_temp_dir()
    secure_env(os.environ, new_token())
    _reload_auth()
    node_ip = node_ip or os.environ.get("GEOXAI_RAY_NODE_IP") or LOOPBACK
    local_only = node_ip == LOOPBACK
    saved = (os.environ.get(_LOCAL_ONLY), ray_constants.ENABLE_RAY_CLUSTER)
    if local_only:
        # read by the processes Ray spawns (at import) and by this one (the module constant)
        os.environ[_LOCAL_ONLY] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            _node_ip_address=node_ip,
            _temp_dir=temp_dir,
            runtime_env=runtime_env,
            log_to_driver=False,
        )
    finally:
        if local_only:
            if saved[0] is None:
                os.environ.pop(_LOCAL_ONLY, None)
            else:
                os.environ[_LOCAL_ONLY] = saved[0]
            ray_constants.ENABLE_RAY_CLUSTER = saved[1]
    return temp_dir
