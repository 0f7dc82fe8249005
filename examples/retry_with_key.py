"""Retry an image request safely: one Idempotency-Key per logical request, reused on every retry.

A retry after a timeout or a dropped connection replays the first response (same images, no second
charge); run with LIMNER_URL (default http://127.0.0.1:8000) and LIMNER_TOKEN if the server needs one.
"""

import os
import time
import uuid

import httpx
import openai

BASE_URL = os.environ.get("LIMNER_URL", "http://127.0.0.1:8000")
client = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=os.environ.get("LIMNER_TOKEN", "unused"), max_retries=0)

key = str(uuid.uuid4())  # one key for this request, kept across its retries
for attempt in range(5):
    try:
        result = client.images.generate(
            prompt="a lighthouse at dusk",
            size="256x256",
            response_format="b64_json",
            extra_headers={"Idempotency-Key": key},
        )
        break
    except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError, openai.RateLimitError):
        time.sleep(2**attempt)  # the same key again: never a second image, never a second charge
else:
    raise SystemExit("gave up")

image = result.data[0].b64_json or ""
print(f"{len(image)} base64 characters")

# Retrying the same request with the same key answers the kept response, marked as a replay.
again = httpx.post(
    f"{BASE_URL}/v1/images/generations",
    json={"prompt": "a lighthouse at dusk", "size": "256x256", "response_format": "b64_json"},
    headers={"Idempotency-Key": key, "Authorization": f"Bearer {os.environ.get('LIMNER_TOKEN', 'unused')}"},
    timeout=60,
)
print("replayed:", again.headers.get("Idempotent-Replayed"), "same image:", again.json()["data"][0]["b64_json"] == image)
