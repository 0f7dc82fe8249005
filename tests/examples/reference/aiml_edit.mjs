import fs from 'node:fs';
import fetch from 'node-fetch';

const API = 'https://api.ai.ml';
const BASE_URL = `${API}/v1/generation/images`;
const API_KEY = process.env.AIML_API_KEY || 'AIML_API_KEY';
const RESPONSE_FORMAT = process.env.RESPONSE_FORMAT || 'url'; // 'url' | 'presigned_url' | 'b64_json'

async function editImage() {
  const body = {
    model: 'image-gen.pro-1.0',
    prompt: 'Remove the background and replace it with a soft gradient; keep subject lighting natural.',
    image: 'https://example.com/source_image.png',
    sequential_image_generation: 'disabled',
    response_format: RESPONSE_FORMAT,
    size: '2K',
    stream: false,
    watermark: false
  };

  // 1) Edit image
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
  const data = json?.data?.image || {};

  if (RESPONSE_FORMAT === 'b64_json') {
    const b64 = data.b64_json;
    if (!b64) throw new Error('No b64_json found');
    fs.writeFileSync('image.png', Buffer.from(b64, 'base64'));
    console.log('Saved image.png (from Base64)');
    return;
  }

  const urlFromApi = data.url;
  if (!urlFromApi) throw new Error('No image URL returned');

  if (RESPONSE_FORMAT === 'presigned_url') {
    // Direct download
    const fileRes = await fetch(urlFromApi);
    if (!fileRes.ok) throw new Error(`Download HTTP ${fileRes.status}`);
    fs.writeFileSync('image.png', Buffer.from(await fileRes.arrayBuffer()));
    console.log('Saved image.png (from presigned_url)');
    return;
  }

  // RESPONSE_FORMAT === 'url' → resolve to presigned URL
  const resolveUrl = urlFromApi.startsWith('http') ? urlFromApi : `${API}${urlFromApi}`;
  const presignRes = await fetch(resolveUrl, {
    headers: { Authorization: `Bearer ${API_KEY}` }
  });
  if (!presignRes.ok) throw new Error(`Resolve HTTP ${presignRes.status}: ${await presignRes.text()}`);
  const { url: presignedUrl } = await presignRes.json();
  if (!presignedUrl) throw new Error('Missing presigned URL');

  const fileRes = await fetch(presignedUrl);
  if (!fileRes.ok) throw new Error(`Download HTTP ${fileRes.status}`);
  fs.writeFileSync('image.png', Buffer.from(await fileRes.arrayBuffer()));
  console.log('Saved image.png');
}

editImage().catch(err => {
  console.error(err);
  process.exit(1);
});
