"""A model served by ``freeret-tui serve`` on another machine, behind the same ``Model`` interface as a local one.

``--model serve:http://HOST:PORT/NAME`` makes the TUI, the CLI and the daemon use it. This side imports neither
torch, transformers nor Ray: requests go over HTTP (the standard library's client) with a bearer token. A reply
whose model, image budget or engine version differs from what the connection began with is refused (an index
must not mix vectors of two models). Calls that change nothing (embed, rerank, token offsets) are retried while the
server restarts a replica; when it stays gone, ``ModelUnavailableError`` says so and lexical search goes on.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from freeret_tui.engine.models.base import Pooling
from freeret_tui.engine.models.wire import (
    ENGINE_VERSION,
    SERVE_PREFIX,
    content_to_wire,
    picture_to_wire,
    vectors_from_wire,
)
from freeret_tui.engine.prompts import Framing, Side
from freeret_tui.engine.types import Content, Kind, Picture
from freeret_tui.errors import ModelLoadError, ModelUnavailableError

# How long an idempotent call keeps retrying while the server is down or restarting a replica (Serve replaces a
# killed replica in a few seconds with the tiny test model; a 2B model loads in tens of seconds). Indexing waits
# that long; a search, which a person watches (its words' hits already shown), gives up sooner.
RETRY_SECONDS = 60.0
SEARCH_RETRY_SECONDS = 5.0
# One request's own limit: a first call may wait for a replica's model to load.
REQUEST_TIMEOUT = 300.0
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


class _Retry(Exception):
    """A failure worth another try (connection refused or reset, a replica gone): carries the reason."""


class RemoteModel:
    """A served model; safe to share between threads (each call is its own HTTP request)."""

    def __init__(self, spec: str, token: str, retry_seconds: float = RETRY_SECONDS,
                 search_retry_seconds: float = SEARCH_RETRY_SECONDS) -> None:
        self.url = spec.removeprefix(SERVE_PREFIX).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ModelLoadError(f"{spec!r}: a served model is named serve:http://HOST:PORT/NAME")
        self.spec = spec
        self.token = token
        self.retry_seconds = retry_seconds
        self.search_retry_seconds = search_retry_seconds
        self._unavailable = threading.Event()  # set while the server is known to be gone: fail fast, no retries
        try:
            info = self._call("GET", "/info", None)
        except ModelUnavailableError as err:
            raise ModelLoadError(str(err), err.steps) from None
        self.name: str = info["model"]
        self.image_max_pixels: int | None = info["image_max_pixels"]
        self.dim = int(info["dim"])
        self.supports_images = bool(info["supports_images"])
        self.device = f"{info['device']} at {self.url}"
        self.batch_size = int(info["batch_size"])
        self.dtype = str(info["dtype"])
        self.rerank_useful = bool(info["rerank_useful"])

    # -- HTTP -----------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            return urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:300]
            if err.code in (401, 403):
                raise ModelLoadError(f"the model server at {self.url} refused this client's token", [
                    "set FREERET_SERVE_TOKEN to the token `freeret-tui serve` wrote (it prints where)"]) from None
            if err.code in _RETRYABLE_STATUS:
                raise _Retry(f"HTTP {err.code}: {detail}") from None
            if err.code == 404:
                raise ModelLoadError(f"nothing is served at {self.url} (HTTP 404)",
                                     ["check the NAME in serve:http://HOST:PORT/NAME against `freeret-tui serve`'s "
                                      "output"]) from None
            raise ModelLoadError(f"the model server at {self.url} failed: HTTP {err.code} {detail}") from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, http.client.HTTPException) as err:
            raise _Retry(str(getattr(err, "reason", err))) from None

    def _call(self, method: str, path: str, body: dict[str, Any] | None, searching: bool = False) -> dict[str, Any]:
        """One idempotent call, retried while the server is unreachable or restarting: ``retry_seconds``, or
        ``search_retry_seconds`` for a search's calls; once only while the server is known to be gone."""
        window = self.search_retry_seconds if searching else self.retry_seconds
        deadline = time.monotonic() + (0.0 if self._unavailable.is_set() else window)
        delay = 0.25
        while True:
            try:
                with self._request(method, path, body) as response:
                    reply = json.loads(response.read())
                break
            except (_Retry, ConnectionError, http.client.HTTPException, socket.timeout) as err:
                if time.monotonic() + delay > deadline:
                    self._unavailable.set()
                    raise ModelUnavailableError(f"the model server at {self.url} is unreachable ({err})", [
                        "searching by words goes on; start `freeret-tui serve` again, or pick a local --model"
                    ]) from None
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
        self._unavailable.clear()
        self._check(reply)
        return reply

    def _check(self, reply: dict[str, Any]) -> None:
        if reply.get("engine") != ENGINE_VERSION:
            raise ModelLoadError(
                f"the model server at {self.url} runs freeret-tui {reply.get('engine')}, this is {ENGINE_VERSION}: "
                "their vectors may differ", ["install the same freeret-tui version on both machines"])
        if hasattr(self, "name") and (reply.get("model"), reply.get("image_max_pixels")) != (
            self.name, self.image_max_pixels
        ):
            raise ModelLoadError(
                f"the model server at {self.url} now serves {reply.get('model')} (image budget "
                f"{reply.get('image_max_pixels')}), not {self.name} ({self.image_max_pixels}) as when this started",
                ["restart freeret-tui: the index then says whether it holds that model's vectors"])

    # -- the Model interface --------------------------------------------------------------------------------

    def embed(
        self,
        items: Sequence[Content],
        side: Side,
        kinds: Sequence[Kind] | None = None,
        pooling: Pooling = Pooling.PREMLP,
    ) -> np.ndarray:
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        reply = self._call("POST", "/embed", {
            "items": [content_to_wire(c) for c in items], "side": side.value,
            "kinds": None if kinds is None else [k.value for k in kinds], "pooling": pooling.value},
            searching=side is Side.QUERY)
        return vectors_from_wire(reply["vectors"])

    def rerank(self, query: Content, candidates: Sequence[Content], framing: Framing = Framing.MC) -> list[float]:
        if not candidates:
            return []
        reply = self._call("POST", "/rerank", {
            "query": content_to_wire(query), "candidates": [content_to_wire(c) for c in candidates],
            "framing": framing.value}, searching=True)
        return [float(p) for p in reply["probs"]]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        reply = self._call("POST", "/token_spans", {"text": text})
        return [(int(a), int(b)) for a, b in reply["spans"]]

    def generate(
        self, system: str, text: str, images: Sequence[Picture], stop: threading.Event | None = None
    ) -> Iterator[str]:
        """Stream the served reply; closing the stream (or ``stop``) closes the connection, which stops the
        server's generation. Not retried once started: a half answer is shown as such."""
        body = {"system": system, "text": text, "images": [picture_to_wire(p) for p in images]}
        try:
            response = self._request("POST", "/generate", body)
        except _Retry as err:
            raise ModelUnavailableError(f"the model server at {self.url} is unreachable ({err})") from None
        with response:
            for line in response:
                if stop is not None and stop.is_set():
                    return
                message = json.loads(line)
                if "engine" in message:
                    self._check(message)
                elif "error" in message:
                    raise ModelUnavailableError(f"the model server failed while answering: {message['error']}")
                elif message.get("done"):
                    return
                else:
                    yield message["text"]
        raise ModelUnavailableError(f"the model server at {self.url} closed the answer before its end")
