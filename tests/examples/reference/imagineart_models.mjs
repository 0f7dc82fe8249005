const token = process.env.IMAGINEART_TOKEN;
const res = await fetch("https://api.ml.imagine.art/v1/models", {
  headers: { "Authorization": `Bearer ${token}` },
});
if (!res.ok) throw new Error(`HTTP ${res.status}`);
