curl -X POST https://api.ml.imagine.art/v1/images/generations \
  -H "Authorization: Bearer $IMAGINEART_TOKEN" \
  -F "prompt=A cinematic portrait of a chef plating ramen, warm tungsten light, shallow depth of field" \
  -F "aspect_ratio=3:2" \
  -F "resolution=2K" \
  -F "reasoning=high" \
  --output image.png
