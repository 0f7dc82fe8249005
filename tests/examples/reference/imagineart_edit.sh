curl -X POST https://api.ml.imagine.art/v1/images/edits \
  -H "Authorization: Bearer $IMAGINEART_TOKEN" \
  -F "prompt=Replace the background with a sunset beach." \
  -F "images=@./portrait.jpg" \
  -F "images=@./reference.png" \
  -F "aspect_ratio=auto" \
  -F "resolution=2K" \
  --output edited.png
