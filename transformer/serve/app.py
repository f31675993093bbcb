"""The HTTP API of `transformer serve`: `create_app(model_dir, settings)` returns the FastAPI app.

Endpoints (JSON in and out; OpenAPI at /docs; the web page of static/ at /):

POST /api/translate (task translation)
    in:  {"text": str, "nbest": int = 1, "beam": int | null = null, "attention": bool = false}
         beam null: the model's decode.beam, raised to nbest if that is larger; beam 1 is greedy search.
    out: {"translation": str,                                  # the best hypothesis, = nbest[0].text
          "nbest": [{"text": str, "score": float | null}, ...], # best first; score null only for -inf
          "attention": null | {"source_tokens": [str, ...], "target_tokens": [str, ...],
                               "cross": [[[[float]]]]}}         # (layers, heads, T, S), with "attention": true
    The translation is transformer.inference.translate_scored's for the same text and settings.
POST /api/generate (task lm)
    in:  {"prompt": str = "", "max_new_tokens": int = 100, "temperature": float = 1.0, "top_k": int | null,
          "top_p": float | null, "seed": int | null}          out: {"text": str}  # the continuation
POST /api/embed (encoder-only: tasks mlm, classify)
    in:  {"texts": [str, ...], "normalize": bool = false}    out: {"vectors": [[float, ...], ...], "dim": int}
GET /api/info
    out: {"task": str, "model_type": str, "model": str (the directory's name), "endpoints": [str, ...],
          "decode": {"beam", "alpha", "max_len_a", "max_len_b"}, "attention": bool (translation_attention is
          installed), "limits": {max_input_chars, max_input_tokens, max_nbest, max_beam, max_new_tokens,
          max_texts, max_body_bytes, timeout_s, max_batch, batch_wait_ms, max_queue}}
GET /api/stats
    out: {"batches": int, "requests": int, "largest_batch": int, "queued": int}  # dynamic batching so far

Errors answer {"detail": str}, or for a body that fails validation (422) FastAPI's {"detail": [{"loc": [...],
"msg": str, ...}, ...]}: 400 an endpoint this model's kind does not answer (or a body that is not UTF-8), 413 a
body over --max-body-bytes, 422 a body that fails validation or a limit (the message names the flag; attention
of a text without tokens is a 422 with a string detail), 501 attention without transformer.viz.attention, 503
--max-queue requests already waiting, 504 no answer within --timeout.

Requests to /api/translate with the same beam, nbest and attention that arrive within --batch-wait-ms are
decoded as one batch (batching.py), on one worker thread that does all the model's work.
"""

import asyncio
import importlib.util
import json
import math
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from transformer.serve.batching import DynamicBatcher, QueueFull
from transformer.serve.engine import ServedModel, ServeError
from transformer.serve.limits import BodySizeLimit
from transformer.serve.schemas import EmbedResponse, GenerateResponse, TranslateResponse, request_models
from transformer.serve.settings import ServeSettings

NO_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>transformer serve</title>
<body><h1>transformer serve</h1><p>The web page is not installed (no index.html in {where}).
The API is running: see <a href="/docs">/docs</a> and <a href="/api/info">/api/info</a>.</p></body></html>"""


def create_app(model_dir: str | Path, settings: ServeSettings | None = None, device: str | None = None) -> FastAPI:
    """The app serving the model directory `model_dir` within `settings` (default: ServeSettings()) on `device`
    (a --device value; default: the CPU)."""
    settings = settings or ServeSettings()
    served = ServedModel(model_dir, device)
    batcher = DynamicBatcher(served.run, settings.max_batch, settings.batch_wait_ms, settings.max_queue)
    app = FastAPI(title="transformer serve", description=__doc__.split("\n\n")[0],
                  lifespan=_lifespan(batcher))
    app.state.served, app.state.batcher, app.state.settings = served, batcher, settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    _add_api(app, served, batcher, settings)
    _add_page(app, settings.static_dir)
    return app


def _lifespan(batcher: DynamicBatcher):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)

    return lifespan


class SafeJSONResponse(JSONResponse):
    """JSON that any validated or rejected input can be echoed in: non-ASCII escaped (a lone surrogate as
    \\udXXX), a non-finite number as its name in a string ("nan"), never an error of its own."""

    def render(self, content: object) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return SafeJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, error: ServeError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": f"the server is busy: {error}; retry later"}, status_code=503,
                            headers={"Retry-After": "1"})


def _too_long(field: str, message: str, value: object) -> RequestValidationError:
    """A 422 in FastAPI's own format, for a limit checked after the body validated (token counts)."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}])


def _add_api(app: FastAPI, served: ServedModel, batcher: DynamicBatcher, settings: ServeSettings) -> None:
    models = request_models(settings)
    config = served.config
    max_tokens = min(settings.max_input_tokens or config.data.max_len, config.data.max_len)  # decoding cuts there

    async def run(key: tuple, item: object) -> dict:
        try:
            return await asyncio.wait_for(batcher.submit(key, item), settings.timeout_s)
        except asyncio.TimeoutError:
            raise ServeError(504, f"no answer within {settings.timeout_s:g} s (--timeout); the server is busy or "
                                  "the input is long: retry, or ask for a smaller beam") from None

    def check_tokens(field: str, text: str, prefix: str = "") -> None:
        n = served.count_tokens(text, prefix)
        if n > max_tokens:
            raise _too_long(field, f"{field} has {n} tokens; this server takes at most {max_tokens} "
                                   "(--max-input-tokens, at most the model's data.max_len): shorten it", text)

    @app.post("/api/translate", response_model=TranslateResponse, summary="translate one text (n-best, attention)")
    async def translate(body: models.translate) -> dict:
        served.require("/api/translate")
        check_tokens("text", body.text, config.decode.prefix)
        beam = body.beam if body.beam is not None else served.default_beam(body.nbest)
        if body.attention and importlib.util.find_spec("transformer.viz.attention") is None:
            raise ServeError(501, "attention maps are not available in this installation "
                                  "(no transformer.viz.attention): send attention false")
        return await run(("translate", beam, body.nbest, body.attention), body.text)

    @app.post("/api/generate", response_model=GenerateResponse, summary="continue a prompt (language models)")
    async def generate(body: models.generate) -> dict:
        served.require("/api/generate")
        check_tokens("prompt", body.prompt)
        return await run(("generate",), body.model_dump())

    @app.post("/api/embed", response_model=EmbedResponse, summary="sentence embeddings (encoder-only models)")
    async def embed(body: models.embed) -> dict:
        served.require("/api/embed")
        for i, text in enumerate(body.texts):
            check_tokens(f"texts[{i}]", text)
        return await run(("embed", body.normalize), body.texts)

    @app.get("/api/info", summary="the model's task, type, decode defaults and the server's limits")
    async def info() -> dict:
        d = config.decode
        limits = {**settings.limits(), "max_input_tokens": max_tokens}
        return {"task": served.task, "model_type": served.model_type, "model": served.model_dir.name,
                "endpoints": served.endpoints(),
                "decode": {"beam": d.beam, "alpha": d.alpha, "max_len_a": d.max_len_a, "max_len_b": d.max_len_b},
                "attention": importlib.util.find_spec("transformer.viz.attention") is not None, "limits": limits}

    @app.get("/api/stats", summary="dynamic batching so far: batches run, requests in them, the largest")
    async def stats() -> dict:
        s = batcher.stats
        return {"batches": s.batches, "requests": s.requests, "largest_batch": s.largest_batch,
                "queued": batcher.queued}


def _add_page(app: FastAPI, static_dir: Path) -> None:
    """The web page of `static_dir` at /, or a short notice where it has no index.html."""
    if (Path(static_dir) / "index.html").is_file():
        app.mount("/", StaticFiles(directory=static_dir, html=True), name="static")
        return

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def no_page() -> str:
        return NO_PAGE.format(where=static_dir)
