"""The one place that runs a request end to end, above engines, media and accounts.

image_service.py   ``ImageService``: one request through the stages, top to bottom
stages/            plan, inputs (bounded memory), generate, finish, store: one module each
gate.py            the ``Gate``/``Ticket`` protocol between the service and accounting
accounting.py      ``AccountsGate``: rate limits, credits and usage around every request
media_access.py    who may read which stored image; signed links
jobs.py            every request's progress (queue position, steps, previews) for streams and /v1/jobs
job_store.py       durable jobs and idempotency keys in the database: open, claim, complete, cancel, recover
webhooks.py        webhook events owed for finished jobs: signing secrets, delivery with retries, the log
webhook_post.py    one signed POST to a receiver, its URL vetted like an image URL (SSRF)
metrics.py         the per-app Prometheus registry
"""
