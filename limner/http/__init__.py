"""Everything FastAPI/Starlette that the dialects share: request ids and logging, auth, the route class
and body reading (``routing``), error responses, SSE, disconnect handling, ``/media``, ``/v1/jobs``,
``/admin``, ``/metrics``, ``/docs`` and the OpenAPI helpers."""
