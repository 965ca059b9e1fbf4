"""``freeret-tui serve``: start (or join) a Ray cluster with token authentication and serve the model on it until
Ctrl+C; prints the ``--model serve:…`` value clients use and where the bearer token is."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from types import FrameType

from freeret_tui.errors import FreeretError, UsageError
from freeret_tui.settings import SERVE_TOKEN_FILE, Settings, data_dir


def serve_token() -> tuple[str, str]:
    """(token, where it is): FREERET_SERVE_TOKEN, else the data dir's token file, made once (owner-only)."""
    given = os.environ.get("FREERET_SERVE_TOKEN", "").strip()
    if given:
        return given, "FREERET_SERVE_TOKEN"
    path = data_dir() / SERVE_TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text(encoding="utf-8").strip(), str(path)


def _ray_missing() -> FreeretError:
    return FreeretError("serving the model needs Ray, which is not installed",
                        ['install it: `pip install "ray[serve,data]>=2.60,<2.61"`'])


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.replicas < 1:
        raise UsageError("--replicas must be at least 1")
    if not 0 < args.port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    from freeret_tui.engine import ray_cluster

    ray_cluster.require_token_auth()  # before Ray is imported
    try:
        import ray
        from ray import serve
    except ImportError:
        raise _ray_missing() from None
    from freeret_tui.engine.ray_serve import ServeOptions, deployment

    token, where = serve_token()
    options = ServeOptions(model=settings.model, device=settings.device, dtype=settings.dtype,
                           batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens,
                           image_max_pixels=args.image_max_pixels or 0, replicas=args.replicas,
                           gpus_per_replica=args.gpus_per_replica, cpus_per_replica=args.cpus_per_replica)
    ray_cluster.connect(args.address, show_worker_logs=True)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        try:
            serve.run(deployment(options, token), name=args.name, route_prefix=f"/{args.name}")
        except RuntimeError as err:  # Serve's word for a replica that could not start (its log says why)
            raise FreeretError(f"the model could not be served: {err}", [
                "the replica's error is in the lines above; check --model and --device on this machine"]) from None
        host = "127.0.0.1" if args.host in ("127.0.0.1", "localhost") else args.host
        print(f"serving {options.model} at http://{host}:{args.port}/{args.name} ({args.replicas} replica(s))")
        print(f"clients: --model serve:http://{host}:{args.port}/{args.name} with FREERET_SERVE_TOKEN set to the "
              f"token in {where}")
        print("Ctrl+C stops it.", flush=True)
        _wait_for_signal()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def _wait_for_signal() -> None:
    """Until Ctrl+C or SIGTERM (systemd's stop)."""
    done = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not done.wait(1.0):
        pass
    print("stopping…", file=sys.stderr)

