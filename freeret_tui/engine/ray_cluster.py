"""Joining or starting the Ray cluster that serves the model or runs a bulk index, always with Ray's token
authentication on: an unauthenticated cluster runs code for anyone who can reach it (Ray's security docs)."""

from __future__ import annotations

import os

from freeret_tui.errors import FreeretError


def require_token_auth() -> None:
    """Before Ray is imported: token authentication on (``RAY_AUTH_MODE=token``); any other mode is refused."""
    mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
    if mode != "token":
        raise FreeretError(f"RAY_AUTH_MODE is {mode!r}: freeret-tui runs Ray only with token authentication",
                           ["unset RAY_AUTH_MODE, or set it to token"])


def connect(address: str | None, num_cpus: int | None = None, show_worker_logs: bool = False) -> None:
    """Join the cluster at ``address`` (it must run with token auth; its token comes from RAY_AUTH_TOKEN or
    ~/.ray/auth_token), or start a local one on 127.0.0.1 only, which makes its own token. ``show_worker_logs``:
    the workers' output on this console (a server's replicas: why one failed to start)."""
    require_token_auth()
    import ray

    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=show_worker_logs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=show_worker_logs,
                     _node_ip_address="127.0.0.1")
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise FreeretError(f"could not reach the Ray cluster at {address or 'this machine'}: {err}", [
            "start one with `RAY_AUTH_MODE=token ray start --head --node-ip-address 127.0.0.1`, or leave out the "
            "address to start one just for this command"]) from None
