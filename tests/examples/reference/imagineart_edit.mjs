import { readFile, writeFile } from "node:fs/promises";

const form = new FormData();
form.set("prompt", "Replace the background with a sunset beach.");
form.set("aspect_ratio", "auto");
form.set("resolution", "2K");
form.append("images", new Blob([await readFile("portrait.jpg")], { type: "image/jpeg" }), "portrait.jpg");
form.append("images", new Blob([await readFile("reference.png")], { type: "image/png" }), "reference.png");

const res = await fetch("https://api.ml.imagine.art/v1/images/edits", {
  method: "POST",
  headers: { "Authorization": `Bearer ${token}` },
  body: form,
});
await writeFile("edited.png", Buffer.from(await res.arrayBuffer()));
