"""Submit an image request without waiting for it (Prefer: respond-async), then poll its job.

Works the same on every dialect's generation and edit routes; run with LIMNER_URL and LIMNER_TOKEN.
"""

import base64
import os
import time

import httpx

BASE_URL = os.environ.get("LIMNER_URL", "http://127.0.0.1:8000")
headers = {"Authorization": f"Bearer {os.environ.get('LIMNER_TOKEN', 'unused')}"}

with httpx.Client(base_url=BASE_URL, headers=headers, timeout=30) as client:
    submitted = client.post(
        "/v1/images/generations",
        json={"prompt": "a paper boat on a pond", "size": "256x256", "response_format": "b64_json"},
        headers={"Prefer": "respond-async"},
    )
    assert submitted.status_code == 202, submitted.text
    location = submitted.headers["Location"]  # /v1/jobs/job_...
    print("accepted:", submitted.json()["id"])

    while True:
        job = client.get(location).json()
        if job["status"] in ("done", "failed", "cancelled"):
            break
        print(job["status"], "queue position", job["queue_position"], "step", job["step"], "of", job["total_steps"])
        time.sleep(0.5)

    if job["status"] != "done":
        raise SystemExit(f"job {job['status']}: {job['error']}: {job['error_message']}")
    png = base64.b64decode(job["result"]["data"][0]["b64_json"])  # the dialect's own response, as if synchronous
    print("done:", len(png), "bytes of PNG, attempts:", job["attempts"])
