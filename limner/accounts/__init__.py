"""Accounts, the ledger domain: consumers, hashed bearer tokens, rate limits, credits and usage. No web
framework here: the HTTP side (auth, /admin, /metrics) is in ``limner.http``, the accounting around each
request in ``limner.service.accounting``.

models.py      the schema (SQLAlchemy), money in micro-credits, times in UTC
db.py          engine + sessions; SQLite (WAL, BEGIN IMMEDIATE) or PostgreSQL; Alembic at open
consumers.py   consumers and their per-model limits
tokens.py      create / verify (constant time) / revoke / rotate bearer tokens
credits.py     grant, reserve -> commit | refund, recovery of expired reservations
usage.py       one record per request; summaries
ratelimit.py   token buckets, in-process or in Redis (one Lua script)
service.py     ``Accounts``: the above as the server and the CLI use them
"""
