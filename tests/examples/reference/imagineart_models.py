import os, httpx

client = httpx.Client(
    base_url="https://api.ml.imagine.art/v1",
    headers={"Authorization": f"Bearer {os.environ['IMAGINEART_TOKEN']}"},
    timeout=300.0,
)
r = client.get("/models")
r.raise_for_status()
