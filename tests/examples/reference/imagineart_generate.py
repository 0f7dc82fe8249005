import httpx

with httpx.Client(timeout=300.0) as client:
    r = client.post(
        "https://api.ml.imagine.art/v1/images/generations",
        headers={"Authorization": f"Bearer {token}"},
        data={
            "prompt": "A cinematic portrait of a chef plating ramen",
            "aspect_ratio": "3:2",
            "resolution": "2K",
            "reasoning": "high",
        },
    )
    r.raise_for_status()
    with open("image.png", "wb") as f:
        f.write(r.content)
