curl -X POST "https://cloud.milady.ai/api/v1/generate-image" \
  -H "Authorization: Bearer YOUR_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "prompt": "Cyberpunk cityscape at night",
    "model": "google/gemini-2.5-flash-image",
    "numImages": 4,
    "aspectRatio": "16:9"
  }'
