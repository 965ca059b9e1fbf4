"""``freeret-tui serve``: the engine's model as a Ray Serve application, for clients on other machines.

Each replica loads the model once (the same ``HFModel``: same prompts, same pre-MLP hook) and answers over HTTP:
``GET /info``, ``POST /embed`` and ``/rerank`` (requests from many clients gathered by ``@serve.batch`` into one
model call), ``POST /generate`` (the answer streamed as JSON lines) and ``POST /token_spans``. Every reply carries
the model's name, its image budget and the engine version (``wire.identity``). A bearer token is required on every
route; the token itself is never handed to Ray (replicas hold its SHA-256). Serve binds 127.0.0.1 unless told
otherwise, and the Ray cluster runs with token authentication (``RAY_AUTH_MODE=token``).

No ``from __future__ import annotations`` here: FastAPI reads the routes' parameter types at runtime, and Serve's
ingress wrapper hides this module's names from it (a string ``Request`` becomes a required query field). For the
same reason the replica's helpers come before its class: the class is captured where it is defined.
"""

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from freeret_tui.engine.models import Pooling, load_model
from freeret_tui.engine.models.wire import contents_from_wire, identity, picture_from_wire, vectors_to_wire
from freeret_tui.engine.prompts import Framing, Side
from freeret_tui.engine.ray_cluster import require_token_auth
from freeret_tui.engine.types import Content, Kind
from freeret_tui.errors import FreeretError

# Before Ray is first imported: a process that imported it with token auth off sends no token to a cluster that
# wants one ("Missing authorization header"), whoever starts that cluster later.
require_token_auth()
from ray import serve  # noqa: E402

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


async def _gathered(call: Callable[..., Any], parts: list[list[Any]], *args: Any) -> list[Any]:
    """``call`` once over every request's items (in a thread: the replica keeps answering health checks), its
    result cut back per request. Should it refuse an input, each request alone: one bad request (an image for a
    text-only model) fails by itself, its result being the error."""
    try:
        whole = await asyncio.to_thread(call, [x for part in parts for x in part], *args)
    except FreeretError as err:
        if len(parts) == 1:
            return [err]
        return [result for part in parts for result in await _gathered(call, [part], *args)]
    out, start = [], 0
    for part in parts:
        out.append(whole[start:start + len(part)])
        start += len(part)
    return out


def _raised(result: Any) -> Any:
    """A request's share of a batched call, or its refusal as a 400 with the reason."""
    if isinstance(result, FreeretError):
        raise HTTPException(status_code=400, detail=str(result))
    return result


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
            items = contents_from_wire(body["items"])
            kinds = [Kind(k) for k in body["kinds"]] if body.get("kinds") is not None else [
                Kind.IMAGE if c.is_image else Kind.TEXT for c in items]
            job = (list(zip(items, kinds, strict=True)), Side(body["side"]),
                   Pooling(body.get("pooling", Pooling.PREMLP.value)))
        except (KeyError, ValueError, TypeError) as err:
            raise HTTPException(status_code=400, detail=f"bad embed request: {err}") from None
        return self._reply(vectors=vectors_to_wire(_raised(await self._embed_batched(job))))

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _embed_batched(self, jobs: list[tuple[list[tuple[Content, Kind]], Side, Pooling]]) -> list[Any]:
        def embed(pairs: list[tuple[Content, Kind]], side: Side, pooling: Pooling) -> Any:
            return self.model.embed([c for c, _ in pairs], side, [k for _, k in pairs], pooling)

        out: list[Any] = [None] * len(jobs)
        for side, pooling in {(side, pooling) for _, side, pooling in jobs}:
            members = [n for n, job in enumerate(jobs) if job[1:] == (side, pooling)]
            for n, result in zip(members, await _gathered(embed, [jobs[n][0] for n in members], side, pooling),
                                 strict=True):
                out[n] = result
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
        return self._reply(probs=_raised(await self._rerank_batched((pairs, framing))))

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _rerank_batched(self, jobs: list[tuple[list[tuple[Content, Content]], Framing]]) -> list[Any]:
        out: list[Any] = [None] * len(jobs)
        for framing in {f for _, f in jobs}:
            members = [n for n, (_, f) in enumerate(jobs) if f is framing]
            for n, result in zip(members, await _gathered(self.model.rerank_pairs, [jobs[n][0] for n in members],
                                                          framing), strict=True):
                out[n] = result
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
        return self._reply(spans=await asyncio.to_thread(self.model.token_spans, str(body.get("text", ""))))


def deployment(options: ServeOptions, token: str) -> Any:
    """The Serve application for ``options`` (bind it with ``serve.run``)."""
    actor: dict[str, Any] = {"num_cpus": options.cpus_per_replica}
    if options.gpus_per_replica:
        actor["num_gpus"] = options.gpus_per_replica
    return ModelReplica.options(num_replicas=options.replicas, ray_actor_options=actor).bind(
        options, token_digest(token))

