import fs from 'node:fs';
import fetch from 'node-fetch';

const API = 'https://api.ai.ml';
const BASE_URL = `${API}/v1/generation/images`;
const API_KEY = process.env.AIML_API_KEY || 'AIML_API_KEY';

async function generateImage() {
  const body = {
    model: 'image-gen.pro-1.0',
    prompt: 'Replace the first person in image 1 with the person in image 2.',
    image: ['https://google.com/sample_1.png', 'https://google.com/sample_2.png'],
    sequential_image_generation: 'disabled',
    response_format: 'url',
    size: '2K',
    stream: false,
    watermark: false
  };

  // 1) Create image
  const res = await fetch(BASE_URL, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${API_KEY}`,
      'Content-Type': 'application/json'
    },
    body: JSON.stringify(body)
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const json = await res.json();
  const backendImageUrl = json?.data?.image?.url;
  if (!backendImageUrl) throw new Error('No image URL returned');

  // 2) Resolve to presigned URL
  const resolveUrl = backendImageUrl.startsWith('http') ? backendImageUrl : `${API}${backendImageUrl}`;
  const presignRes = await fetch(resolveUrl, { headers: { Authorization: `Bearer ${API_KEY}` } });
  if (!presignRes.ok) throw new Error(`Resolve HTTP ${presignRes.status}: ${await presignRes.text()}`);
  const { url: presignedUrl } = await presignRes.json();
  if (!presignedUrl) throw new Error('Missing presigned URL');

  // 3) Download
  const fileRes = await fetch(presignedUrl);
  if (!fileRes.ok) throw new Error(`Download HTTP ${fileRes.status}`);
  const buf = Buffer.from(await fileRes.arrayBuffer());
  fs.writeFileSync('image.png', buf);
  console.log('Saved image.png');
}

generateImage().catch(err => {
  console.error(err);
  process.exit(1);
});
