"""``freeret-tui serve``: the engine's model as a Ray Serve application, for clients on other machines.

Each replica loads the model once (the same ``HFModel``: same prompts, same pre-MLP hook) and answers over HTTP:
``GET /info``, ``POST /embed`` and ``/rerank`` (requests from many clients gathered by ``@serve.batch`` into one
model call), ``POST /generate`` (the answer streamed as JSON lines) and ``POST /token_spans``. Every reply carries
the model's name, its image budget and the engine version (``wire.identity``). A bearer token is required on every
route; the token itself is never handed to Ray (replicas hold its SHA-256). Serve binds 127.0.0.1 unless told
otherwise, and the Ray cluster runs with token authentication (``RAY_AUTH_MODE=token``).

No ``from __future__ import annotations`` here: FastAPI reads the routes' parameter types at runtime, and Serve's
ingress wrapper hides this module's names from it (a string ``Request`` becomes a required query field).
"""

import asyncio
import hashlib
import hmac
import json
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from freeret_tui.engine.models import Pooling, load_model
from freeret_tui.engine.models.wire import contents_from_wire, identity, picture_from_wire, vectors_to_wire
from freeret_tui.engine.prompts import Framing, Side
from freeret_tui.engine.types import Content, Kind
from freeret_tui.errors import FreeretError

# Requests gathered into one model call, and how long the first waits for company. 16 fills a GPU's batch
# (default_batch_size); on a CPU the model splits it into its own batches of 2 anyway.
MAX_BATCH = 16
BATCH_WAIT_S = 0.01


@dataclass(frozen=True)
class ServeOptions:
    """How the model is deployed: where it loads (as ``load_model`` takes it) and how many replicas of it."""

    model: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 0
    max_new_tokens: int = 256
    image_max_pixels: int = 0  # 0: the model's default budget
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


api = FastAPI(title="freeret-tui model", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name="model", max_ongoing_requests=2 * MAX_BATCH, health_check_period_s=5)
@serve.ingress(api)
class ModelReplica:
    """One copy of the model in one Ray actor (one per GPU, or CPU replicas)."""

    def __init__(self, options: ServeOptions, digest: str) -> None:
        kwargs: dict[str, Any] = {"image_max_pixels": options.image_max_pixels} if options.image_max_pixels else {}
        self.model: Any = load_model(options.model, options.device, options.batch_size, options.max_new_tokens,
                                       options.dtype, **kwargs)
        self.identity = identity(self.model)
        self.digest = digest

    def _authorize(self, request: Request) -> None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token_digest(presented), self.digest):
            raise HTTPException(status_code=401, detail="a valid bearer token is required")

    def _reply(self, **fields: Any) -> JSONResponse:
        return JSONResponse({**self.identity, **fields})

    async def _body(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(status_code=400, detail="the body is not JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(status_code=400, detail="the body is not a JSON object")
        return body

    async def _run(self, call: Callable[..., Any], *args: Any) -> Any:
        """The model's blocking work in a thread: the replica keeps answering health checks meanwhile."""
        try:
            return await asyncio.to_thread(call, *args)
        except FreeretError as err:  # e.g. an image given to a text-only model
            raise HTTPException(status_code=400, detail=str(err)) from None

    @api.get("/info")
    async def info(self, request: Request) -> JSONResponse:
        self._authorize(request)
        m = self.model
        return self._reply(dim=m.dim, supports_images=m.supports_images, device=m.device, batch_size=m.batch_size,
                           dtype=m.dtype, rerank_useful=bool(getattr(m, "rerank_useful", False)))

    # -- embed: requests batched by side and pooling --------------------------------------------------------

    @api.post("/embed")
    async def embed(self, request: Request) -> JSONResponse:
        body = await self._body(request)
        try:
            job = (contents_from_wire(body["items"]), Side(body["side"]),
                   None if body.get("kinds") is None else [Kind(k) for k in body["kinds"]],
                   Pooling(body.get("pooling", Pooling.PREMLP.value)))
        except (KeyError, ValueError, TypeError) as err:
            raise HTTPException(status_code=400, detail=f"bad embed request: {err}") from None
        return self._reply(vectors=vectors_to_wire(await self._embed_batched(job)))

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _embed_batched(self, jobs: list[tuple[list[Content], Side, list[Kind] | None, Pooling]]) -> list[Any]:
        groups: dict[tuple[Side, Pooling], list[int]] = defaultdict(list)
        for n, (_items, side, _kinds, pooling) in enumerate(jobs):
            groups[side, pooling].append(n)
        out: list[Any] = [None] * len(jobs)
        for (side, pooling), members in groups.items():
            items = [c for n in members for c in jobs[n][0]]
            kinds = [k for n in members for k in (jobs[n][2] or [Kind.IMAGE if c.is_image else Kind.TEXT
                                                                  for c in jobs[n][0]])]
            vectors = await self._run(self.model.embed, items, side, kinds, pooling)
            start = 0
            for n in members:
                out[n] = vectors[start:start + len(jobs[n][0])]
                start += len(jobs[n][0])
        return out

    # -- rerank: every request's pairs in one call ----------------------------------------------------------

    @api.post("/rerank")
    async def rerank(self, request: Request) -> JSONResponse:
        body = await self._body(request)
        try:
            query = contents_from_wire([body["query"]])[0]
            pairs = [(query, c) for c in contents_from_wire(body["candidates"])]
            framing = Framing(body.get("framing", Framing.MC.value))
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise HTTPException(status_code=400, detail=f"bad rerank request: {err}") from None
        return self._reply(probs=await self._rerank_batched((pairs, framing)))

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _rerank_batched(self, jobs: list[tuple[list[tuple[Content, Content]], Framing]]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in jobs]
        for framing in {f for _, f in jobs}:
            members = [n for n, (_, f) in enumerate(jobs) if f is framing]
            pairs = [p for n in members for p in jobs[n][0]]
            probs = await self._run(self.model.rerank_pairs, pairs, framing)
            start = 0
            for n in members:
                out[n] = probs[start:start + len(jobs[n][0])]
                start += len(jobs[n][0])
        return out

    # -- answers, streamed ----------------------------------------------------------------------------------

    @api.post("/generate")
    async def generate(self, request: Request) -> StreamingResponse:
        body = await self._body(request)
        try:
            system, text = str(body["system"]), str(body["text"])
            images = [picture_from_wire(i) for i in body.get("images", [])]
        except (KeyError, ValueError, TypeError) as err:
            raise HTTPException(status_code=400, detail=f"bad generate request: {err}") from None
        return StreamingResponse(self._stream(system, text, images), media_type="application/x-ndjson")

    async def _stream(self, system: str, text: str, images: Sequence[Any]) -> AsyncIterator[str]:
        """JSON lines: the identity, then each piece, then done (or the error). A client that hangs up
        closes this generator, which stops the model's generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for piece in self.model.generate(system, text, images, stop):
                    loop.call_soon_threadsafe(queue.put_nowait, ("text", piece))
                loop.call_soon_threadsafe(queue.put_nowait, ("done", None))
            except Exception as err:  # noqa: BLE001 - reported to the client in the stream, which has begun
                loop.call_soon_threadsafe(queue.put_nowait, ("error", f"{type(err).__name__}: {err}"))

        worker = threading.Thread(target=produce, name="freeret-serve-generate", daemon=True)
        worker.start()
        try:
            yield json.dumps(self.identity) + "\n"
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield json.dumps({"text": value}) + "\n"
                    continue
                yield json.dumps({"done": True} if kind == "done" else {"error": value}) + "\n"
                return
        finally:
            stop.set()

    @api.post("/token_spans")
    async def token_spans(self, request: Request) -> JSONResponse:
        body = await self._body(request)
        return self._reply(spans=await self._run(self.model.token_spans, str(body.get("text", ""))))


def deployment(options: ServeOptions, token: str) -> Any:
    """The Serve application for ``options`` (bind it with ``serve.run``)."""
    actor: dict[str, Any] = {"num_cpus": options.cpus_per_replica}
    if options.gpus_per_replica:
        actor["num_gpus"] = options.gpus_per_replica
    return ModelReplica.options(num_replicas=options.replicas, ray_actor_options=actor).bind(
        options, token_digest(token))

