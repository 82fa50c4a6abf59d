"""The HTTP API (FastAPI): OpenAI-compatible image generation, the native job API, health and metrics."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from newbie.serve.errors import ApiError, error_body
from newbie.serve.inputs import check_unicode
from newbie.serve.limits import validate
from newbie.serve.schemas import (
    ErrorBody,
    ExpandRequest,
    ExpandResponse,
    ExpandWarning,
    GenerationParams,
    Health,
    ImageData,
    ImageGenerationRequest,
    ImagesResponse,
    JobStatus,
)
from newbie.serve.security import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    ErrorCountMiddleware,
    HostCheckMiddleware,
)
from newbie.serve.store import CANCELLED, DONE, FAILED
from newbie.version import __version__

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 413, 422)}
SYNC_TIMEOUT_S = 600.0  # how long POST /v1/images/generations waits for its job before answering 504
PROBE_TIMEOUT_S = 2.0  # /healthz and /metrics answer within this even while the store is locked


def _validation_error(exc: RequestValidationError, content_type: str | None = None) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("loc", ())[:1] == ("body",) and "json" not in (content_type or "").lower():
        # FastAPI reads a body as JSON only when it says so; anything else arrives as raw bytes
        return ApiError(
            415,
            f"send the body as JSON with 'Content-Type: application/json' (got {content_type or 'none'})",
            "invalid_content_type",
        )
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return ApiError(400, f"malformed JSON body: {detail}".rstrip(": "), "invalid_json")
    if first.get("type") == "model_attributes_type":
        return ApiError(422, "the request body must be a JSON object", "invalid_body")
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    param = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
    return ApiError(422, "; ".join(parts), "invalid_field", param)


def _scrub(message: str, service) -> str:
    """No server path or object repr in a reply: the engine's messages name files by their full path."""
    if service is not None:
        message = message.replace(str(service.data_dir) + "/", "").replace(str(service.data_dir), "DATA")
    return re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "the uploaded image", message)


def _status(service, job, request: Request) -> JobStatus:
    images = []
    if job.state == DONE:
        base = str(request.url_for("job_image", job_id=job.id))
        images = [f"{base}?index={i}" for i in range(job.n)]
    return JobStatus(
        id=job.id,
        state=job.state,
        step=service.step(job),
        steps=job.params.get("total_steps", job.params.get("steps", 0)),
        n=job.n,
        created=job.created,
        started=job.started,
        finished=job.finished,
        seconds=job.seconds,
        error=job.error,
        cancel_requested=job.cancel_requested or service.cancel_asked(job.id),
        images=images,
        params=job.params,
    )


def create_app(
    service,
    api_key: str | None = None,
    sync_timeout: float = SYNC_TIMEOUT_S,
    hosts: set[str] | None = None,
) -> FastAPI:
    """`service` may be None only to read the schema (app.openapi()); no route runs then. `hosts`: the
    Host names answered (security.allowed_hosts); None answers any."""

    # Work that can wait long runs off the request pool, in its own bounded executors: an expansion waits
    # for the running job (it shares the pipeline's Gemma), and a probe must answer while everything else
    # is busy. The starlette pool then only runs short calls.
    max_expands = service.limits.max_expands if service is not None else 1
    expand_pool = ThreadPoolExecutor(max_expands, thread_name_prefix="newbie-expand")
    probe_pool = ThreadPoolExecutor(2, thread_name_prefix="newbie-probe")

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)
            expand_pool.shutdown(wait=False, cancel_futures=True)
            probe_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="newbie",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",  # Swagger UI; its page loads the swagger-ui script from a CDN
        redoc_url="/redoc",
        description="NewBie image Exp0.1 over HTTP: OpenAI-compatible image generation and a durable "
        "job queue. See docs/api.md.",
    )
    # the order of the routes is the order of the paths in the OpenAPI schema
    _error_handlers(app, service)
    _openai_routes(app, service, sync_timeout)
    _job_routes(app, service)
    _expand_route(app, service, expand_pool, max_expands)
    _probe_routes(app, service, probe_pool)
    _openapi_with_auth(app)
    _middleware(app, service, api_key, hosts)
    return app


def _error_handlers(app: FastAPI, service) -> None:
    """Every error as the OpenAI-style error body, with no server path in its message."""

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        message = _scrub(exc.message, service)
        return JSONResponse(error_body(exc.status, message, exc.code, exc.param), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        return await api_error(request, _validation_error(exc, request.headers.get("content-type")))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(exc.status_code, str(exc.detail), code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(request, exc: Exception):
        return JSONResponse(
            error_body(500, "internal server error; see the server log", "internal_error"), status_code=500
        )


def _openai_routes(app: FastAPI, service, sync_timeout: float) -> None:
    """POST /v1/images/generations: OpenAI's image API, answered when the job is done."""

    @app.post(
        "/v1/images/generations",
        response_model=ImagesResponse,
        responses={**ERRORS, 500: {"model": ErrorBody}, 504: {"model": ErrorBody}},
        summary="OpenAI-compatible: generate and wait for the images",
    )
    async def images_generations(body: ImageGenerationRequest, request: Request) -> ImagesResponse:
        check_unicode(body.model_dump())
        # in a thread: validation may ask a Ray replica, and the commit waits for the disk
        job = await run_in_threadpool(
            lambda: service.submit(*validate(body, service.validator, service.limits, service.data_dir))
        )
        job = await service.wait(job.id, sync_timeout)
        if job.state == FAILED:  # job.error is errors.describe()'s line, which may already say so
            detail = job.error or "unknown error"
            message = detail if detail.startswith("generation failed") else f"generation failed: {detail}"
            raise ApiError(500, message, "generation_failed")
        if job.state == CANCELLED:
            raise ApiError(409, f"job {job.id} was cancelled", "job_cancelled")
        data = []
        base = str(request.url_for("job_image", job_id=job.id))
        for i in range(job.n):
            seed = job.params["seed"] + i
            if body.response_format == "url":
                data.append(ImageData(url=f"{base}?index={i}", seed=seed))
            else:
                png = await run_in_threadpool(service.existing_image(job.id, i).read_bytes)
                data.append(ImageData(b64_json=base64.b64encode(png).decode(), seed=seed))
        return ImagesResponse(created=int(time.time()), data=data, job_id=job.id)


def _job_routes(app: FastAPI, service) -> None:
    """The native job API: queue, poll, fetch an image, cancel."""

    @app.post(
        "/v1/jobs",
        status_code=202,
        response_model=JobStatus,
        responses={**ERRORS, 503: {"model": ErrorBody}},
        summary="Queue a generation; poll GET /v1/jobs/{id}",
    )
    def create_job(body: GenerationParams, request: Request):
        check_unicode(body.model_dump())
        job = service.submit(*validate(body, service.validator, service.limits, service.data_dir))
        status = _status(service, job, request)
        location = str(request.url_for("get_job", job_id=job.id))
        return JSONResponse(jsonable_encoder(status), status_code=202, headers={"Location": location})

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobStatus,
        responses={404: {"model": ErrorBody}},
        summary="Job state: queued, running (with step progress), done, failed or cancelled",
    )
    def get_job(job_id: str, request: Request) -> JobStatus:
        return _status(service, service.get(job_id), request)

    @app.get(
        "/v1/jobs/{job_id}/image",
        response_class=FileResponse,
        summary="A finished job's PNG (recipe embedded)",
        responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
    )
    def job_image(job_id: str, index: int = Query(0, ge=0, description="image of the batch, 0-based")):
        job = service.get(job_id)
        if job.state != DONE:
            raise ApiError(409, f"job {job_id} is {job.state}, not done", "job_not_done")
        if index >= job.n:
            raise ApiError(
                404, f"job {job_id} has {job.n} image(s); index {index} does not exist", "image_not_found"
            )
        return FileResponse(service.existing_image(job_id, index), media_type="image/png")

    @app.delete(
        "/v1/jobs/{job_id}",
        response_model=JobStatus,
        responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
        summary="Cancel: a queued job at once, a running one at its next step",
    )
    def cancel_job(job_id: str, request: Request) -> JobStatus:
        return _status(service, service.cancel(job_id), request)


def _expand_route(app: FastAPI, service, expand_pool: ThreadPoolExecutor, max_expands: int) -> None:
    """POST /v1/prompts/expand, at most max_expands at once (running or waiting), in expand_pool."""
    expanding = 0  # expansions running or waiting (one event loop: no lock needed)

    @app.post(
        "/v1/prompts/expand",
        response_model=ExpandResponse,
        responses=ERRORS,
        summary="Sentence or tags -> XML prompt, written by the model's own Gemma (or the rules)",
    )
    async def expand_prompt(body: ExpandRequest) -> ExpandResponse:
        nonlocal expanding
        from newbie.errors import NewbieError
        from newbie.prompts import PromptError

        if len(body.text) > service.limits.max_prompt_chars:
            raise ApiError(
                413,
                f"text is {len(body.text)} characters; the limit is {service.limits.max_prompt_chars}",
                "prompt_too_long",
                "text",
            )
        check_unicode(body.text, "text")
        if body.seed is not None and not 0 <= body.seed < 2**64:
            raise ApiError(422, f"seed must be between 0 and 2^64-1, got {body.seed}", "invalid_seed", "seed")
        if expanding >= max_expands:
            raise ApiError(
                503, f"{max_expands} prompt expansions are already waiting; try again later", "busy"
            )
        t0 = time.perf_counter()
        expanding += 1
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                expand_pool,
                lambda: service.expand(
                    body.text,
                    body.llm,
                    seed=body.seed,
                    temperature=body.temperature,
                    max_new_tokens=body.max_new_tokens,
                ),
            )
        except PromptError as e:
            raise ApiError(422, f"text is malformed XML: {e}", "invalid_prompt", "text") from None
        except NewbieError as e:
            raise ApiError(422, str(e), "invalid_prompt", "text") from None
        finally:
            expanding -= 1
        stats = out.stats
        return ExpandResponse(
            xml=out.xml,
            warnings=[
                ExpandWarning(
                    code=w.code, message=w.message, character=w.character, line=w.line, column=w.column
                )
                for w in out.warnings
            ],
            source=out.source,
            note=out.note,
            new_tokens=stats.new_tokens if stats else None,
            tokens_per_s=round(stats.tokens_per_s, 2) if stats else None,
            seconds=round(time.perf_counter() - t0, 3),
        )


def _probe_routes(app: FastAPI, service, probe_pool: ThreadPoolExecutor) -> None:
    """/healthz and /metrics, answered within PROBE_TIMEOUT_S even while the store is locked."""

    async def probe(call):
        future = asyncio.get_running_loop().run_in_executor(probe_pool, call)
        return await asyncio.wait_for(future, PROBE_TIMEOUT_S)

    @app.get("/healthz", response_model=Health, summary="Liveness: workers alive and queue size")
    async def healthz():
        try:
            health = await probe(service.health)
        except asyncio.TimeoutError:
            health = {
                "status": "degraded",
                "model": service.model_name,
                "workers": len(service.workers),
                "workers_alive": sum(w.is_alive() for w in service.workers),
                "queued": 0,
                "running": 0,
                "reason": f"the job store did not answer within {PROBE_TIMEOUT_S:g} s",
            }
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    async def metrics():
        try:
            text = await probe(service.metrics_text)
        except asyncio.TimeoutError:
            raise ApiError(
                503, f"the job store did not answer within {PROBE_TIMEOUT_S:g} s", "busy"
            ) from None
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _openapi_with_auth(app: FastAPI) -> None:
    """The schema names the optional bearer key."""
    plain_openapi = app.openapi

    def openapi_with_auth() -> dict:
        if app.openapi_schema is None:
            schema = plain_openapi()  # caches itself in app.openapi_schema
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "when started with --api-key"}
            }
            schema["security"] = [{}, {"bearer": []}]  # optional: the server decides
        return app.openapi_schema

    app.openapi = openapi_with_auth


def _middleware(app: FastAPI, service, api_key: str | None, hosts: set[str] | None) -> None:
    # outermost last: count every error, check the Host and the key before reading a body, then cap it
    if service is not None:
        limits = service.limits
        app.add_middleware(
            BodyLimitMiddleware,
            max_bytes=limits.max_body_bytes,
            buffer_bytes=limits.max_body_buffer,
            timeout_s=limits.body_timeout_s,
        )
        if api_key:
            app.add_middleware(ApiKeyMiddleware, api_key=api_key)
        if hosts is not None:
            app.add_middleware(HostCheckMiddleware, hosts=hosts)
        app.add_middleware(ErrorCountMiddleware, metrics=service.metrics)
