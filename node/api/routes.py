"""The URL map."""

from __future__ import annotations

from aiohttp import web

from node.api import jobs, metrics, node_info, openai_routes, openapi


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", node_info.health)
    app.router.add_get("/info", node_info.info)
    app.router.add_get("/resources", node_info.resources)
    app.router.add_post("/api/jobs", jobs.submit)
    app.router.add_get("/api/jobs", jobs.get_jobs)
    app.router.add_post("/api/jobs/batch", jobs.submit_batch)
    app.router.add_post("/api/jobs/stream", jobs.stream)
    app.router.add_put("/api/status", jobs.record_status)
    app.router.add_get("/openapi.json", openapi.openapi)
    app.router.add_get("/metrics", metrics.metrics_endpoint)
    # OpenAI-compatible inference (openai_routes.py); errors there use OpenAI's shape.
    app.router.add_post("/v1/chat/completions", openai_routes.chat_completions)
    app.router.add_get("/v1/models", openai_routes.list_models)
    app.router.add_post("/serving/llm/{model:.+}/chat/completions", openai_routes.serving_chat_completions)
