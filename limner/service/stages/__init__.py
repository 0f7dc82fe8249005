"""The stages of one request, in the order ``ImageService.run`` takes them; each a small unit with one job.

plan.py       what the request asks of which model: checks, style, adapters, steps (no I/O)
inputs.py     input images read and decoded, shrunk to what the request can use, held within a memory budget
outpaint.py   an edit's image on a grown canvas, its mask, and its own pixels put back after the model
generate.py   the model's slot, its residency and the engine call under the request's deadline
upscale.py    a generation's images upscaled and refined ("hires fix"), when the request asks
finish.py     size, style, watermark and encoding of every image, side by side in threads
store.py      the encoded images in the media store, all or none

Admission (rate limits, credits) is the gate's (``limner.service.gate``); delivery (the charge) too.
"""
