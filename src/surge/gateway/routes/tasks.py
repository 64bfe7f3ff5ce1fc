"""``GET /tasks/<id>``: a task's record from the result store, as JSON."""

from __future__ import annotations

from surge.errors import ResultStoreError
from surge.gateway.errors import ServiceUnavailable
from surge.gateway.exchange import Request, ResponseWriter
from surge.gateway.routes.replies import send_json
from surge.results.interface import ResultStore

TASKS_PREFIX = "/tasks/"


class TaskStatusHandler:
    def __init__(self, store: ResultStore | None) -> None:
        self.store = store

    async def handle(self, request: Request, response: ResponseWriter) -> None:
        task_id = request.path[len(TASKS_PREFIX):]
        if not task_id or "/" in task_id:
            await send_json(response, 404, {"error": "not found"})
            return
        if self.store is None:
            raise ServiceUnavailable("no result store is configured")
        try:
            record = await self.store.get(task_id)
        except ResultStoreError as exc:
            raise ServiceUnavailable(f"the result store failed: {exc}") from exc
        if record is None:
            await send_json(response, 404, {"error": "unknown task id", "id": task_id})
            return
        await send_json(response, 200, record.to_json())
