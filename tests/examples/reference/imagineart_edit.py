import httpx

files = [
    ("images", ("portrait.jpg", open("portrait.jpg", "rb"), "image/jpeg")),
    ("images", ("reference.png", open("reference.png", "rb"), "image/png")),
]
data = {
    "prompt": "Replace the background with a sunset beach.",
    "aspect_ratio": "auto",
    "resolution": "2K",
}
with httpx.Client(timeout=300.0) as client:
    r = client.post(
        "https://api.ml.imagine.art/v1/images/edits",
        headers={"Authorization": f"Bearer {token}"},
        data=data,
        files=files,
    )
r.raise_for_status()
open("edited.png", "wb").write(r.content)
