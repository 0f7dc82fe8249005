const response = await fetch("https://cloud.milady.ai/api/v1/generate-image", {
  method: "POST",
  headers: {
    Authorization: "Bearer YOUR_API_KEY",
    "Content-Type": "application/json",
  },
  body: JSON.stringify({
    prompt: "Transform this into a watercolor painting",
    sourceImage: "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA...",
    model: "google/gemini-2.5-flash-image",
  }),
});
