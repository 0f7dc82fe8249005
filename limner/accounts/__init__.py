"""Accounts: consumers, hashed bearer tokens, rate limits, credits, usage and metrics.

models.py      the schema (SQLAlchemy), money in micro-credits, times in UTC
db.py          engine + sessions; SQLite (WAL, BEGIN IMMEDIATE) or PostgreSQL; Alembic at open
consumers.py   consumers and their per-model limits
tokens.py      create / verify (constant time) / revoke / rotate bearer tokens
credits.py     grant, reserve -> commit | refund, recovery of expired reservations
usage.py       one record per request; summaries
ratelimit.py   token buckets, in-process or in Redis (one Lua script)
service.py     ``Accounts``: the above as the server and the CLI use them
auth.py        the FastAPI dependency and route class that authenticate dialect routes
gate.py        limits, credits and usage around ``ImageService.run``
admin.py       /admin HTTP API
metrics.py     /metrics (Prometheus), per-app registry
"""
