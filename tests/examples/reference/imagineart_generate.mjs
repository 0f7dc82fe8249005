import { writeFile } from "node:fs/promises";

const form = new FormData();
form.set("prompt", "A cinematic portrait of a chef plating ramen");
form.set("aspect_ratio", "3:2");
form.set("resolution", "2K");
form.set("reasoning", "high");

const res = await fetch("https://api.ml.imagine.art/v1/images/generations", {
  method: "POST",
  headers: { "Authorization": `Bearer ${token}` },
  body: form,
});
if (!res.ok) throw new Error(await res.text());
await writeFile("image.png", Buffer.from(await res.arrayBuffer()));
