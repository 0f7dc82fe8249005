curl -X POST "https://cloud.milady.ai/api/v1/generate-image" \
  -H "Authorization: Bearer YOUR_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "prompt": "A serene mountain landscape at sunset",
    "model": "google/gemini-2.5-flash-image",
    "aspectRatio": "1:1",
    "numImages": 1
  }'
