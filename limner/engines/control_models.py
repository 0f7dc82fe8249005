"""Control and reference models inside a diffusers engine: loaded on first use, then kept (worker thread only).

A request's controls run on a pipeline derived from the model's own (diffusers' ``from_pipe`` with the
control models: no weights copied), one per task and set of controls, kept for the next request that
asks the same. Several ControlNets run as diffusers' ``MultiControlNetModel``, several T2I-Adapters as
``MultiAdapter``. Control images are resized to the generation size and preprocessed there (canny edges
are drawn at the size the control reads them).

The IP-Adapter is loaded into the shared denoiser when a request carries reference images and unloaded
when one carries none, so requests without references run the model exactly as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from limner.core.errors import InvalidRequest, ModelNotAvailable
from limner.core.models import EngineControl, EngineReference
from limner.core.preprocess import preprocess
from limner.engines.controls import ControlSpec, ReferenceSpec
from limner.engines.diffusers_loading import Pipeline, call_parameters, dtype_argument

TASK_WORDS = {"generate": "text to image", "edit": "image to image", "inpaint": "inpainting"}


class ControlModels:
    """The control models of one engine and the pipelines derived to run them."""

    def __init__(self, specs: Sequence[ControlSpec]) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.models: dict[str, Any] = {}
        self._pipes: dict[tuple[str, tuple[str, ...]], Pipeline] = {}
        self.loads = 0
        """Control models read from disk so far (each at most once per load of the base model)."""

    def reset(self) -> None:
        """The base pipeline went away: derived pipelines and loaded models go with it."""
        self.models.clear()
        self._pipes.clear()

    def pipeline(
        self, task: str, pipe: Pipeline, controls: Sequence[EngineControl], dtype: Any, device: Any
    ) -> Pipeline:
        """``pipe`` (the task's pipeline) with ``controls`` attached, derived once per task and set of names."""
        names = tuple(control.name for control in controls)
        _check_unet(pipe, "controls")
        derived = self._pipes.get((task, names))
        if derived is None:
            models = [self._model(name, pipe, dtype, device) for name in names]
            kind = self.specs[names[0]].type
            derived = (_with_adapters if kind == "t2i-adapter" else _with_controlnets)(task, pipe, models)
            derived.set_progress_bar_config(disable=True)
            self._pipes[(task, names)] = derived
        return derived

    def _model(self, name: str, pipe: Pipeline, dtype: Any, device: Any) -> Any:
        model = self.models.get(name)
        if model is not None:
            return model
        spec = self.specs[name]
        path = spec.path.expanduser()
        if not path.exists():
            raise ModelNotAvailable(f"Control '{name}': {path} does not exist.")
        from diffusers import ControlNetModel, T2IAdapter

        cls = T2IAdapter if spec.type == "t2i-adapter" else ControlNetModel
        try:
            model = cls.from_pretrained(str(path), local_files_only=True, **dtype_argument(dtype))
        except (OSError, ValueError) as exc:
            raise ModelNotAvailable(f"Control '{name}' could not be loaded from {path}: {exc}") from exc
        _check_fit(name, spec.type, model.config, pipe.unet.config)
        self.models[name] = model.to(device)
        self.loads += 1
        return self.models[name]


def _with_controlnets(task: str, pipe: Pipeline, models: list[Any]) -> Pipeline:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    auto = {"generate": AutoPipelineForText2Image, "edit": AutoPipelineForImage2Image}
    auto["inpaint"] = AutoPipelineForInpainting
    try:
        return auto[task].from_pipe(pipe, controlnet=models[0] if len(models) == 1 else models)
    except (ValueError, KeyError) as exc:  # no ControlNet variant of this pipeline for this task
        raise InvalidRequest(
            f"This model ({type(pipe).__name__}) has no ControlNet pipeline for {TASK_WORDS[task]}.", param="controls"
        ) from exc


def _with_adapters(task: str, pipe: Pipeline, models: list[Any]) -> Pipeline:
    from diffusers import MultiAdapter, StableDiffusionAdapterPipeline, StableDiffusionXLAdapterPipeline

    name = type(pipe).__name__
    cls = StableDiffusionXLAdapterPipeline if name.startswith("StableDiffusionXL") else None
    cls = StableDiffusionAdapterPipeline if name == "StableDiffusionPipeline" else cls
    if cls is None or task != "generate":
        raise InvalidRequest(
            f"T2I-Adapters steer text to image on Stable Diffusion 1.x and SDXL models; this is {TASK_WORDS[task]} "
            f"with {name}.",
            param="controls",
        )
    adapter = models[0] if len(models) == 1 else MultiAdapter(models)
    derived: Pipeline = cls.from_pipe(pipe, adapter=adapter)
    return derived


def _check_unet(pipe: Pipeline, param: str) -> None:
    """Controls and the IP-Adapter here are UNet ones (SD 1.x, SDXL); SD 3 and FLUX models have their own kinds."""
    if getattr(pipe, "unet", None) is None:
        what = "Controls" if param == "controls" else "Reference images"
        raise InvalidRequest(
            f"{what} run on Stable Diffusion 1.x and SDXL models; this model's pipeline is {type(pipe).__name__}.",
            param=param,
        )


def _check_fit(name: str, kind: str, control: Any, unet: Any) -> None:
    """Refuse a control trained for another architecture before it fails deep inside a denoising step."""
    ours = list(unet.block_out_channels)
    if kind == "t2i-adapter":
        fits = list(control.channels) == ours
    else:
        fits = list(control.block_out_channels) == ours and control.cross_attention_dim == unet.cross_attention_dim
    if not fits:
        raise InvalidRequest(
            f"Control '{name}' does not fit this model's denoiser; is it for another base model?", param="controls"
        )


def control_arguments(pipe: Pipeline, controls: Sequence[EngineControl], size: tuple[int, int]) -> dict[str, Any]:
    """The pipeline call's control arguments: maps at ``size``, scales and (ControlNets) their step range."""
    params = call_parameters(pipe)
    maps = [
        preprocess(control.image.convert("RGB").resize(size, Image.Resampling.LANCZOS), control.preprocess)
        for control in controls
    ]

    def one(values: list[Any]) -> Any:
        return values[0] if len(values) == 1 else values

    key = "control_image" if "control_image" in params else "image"  # image-to-image takes both
    scales = [control.scale for control in controls]
    if "adapter_conditioning_scale" in params:
        return {key: one(maps), "adapter_conditioning_scale": one(scales)}
    return {
        key: one(maps),
        "controlnet_conditioning_scale": one(scales),
        "control_guidance_start": one([control.start for control in controls]),
        "control_guidance_end": one([control.end for control in controls]),
    }


class ReferenceModel:
    """The model's IP-Adapter: in the denoiser while requests carry reference images, out when they do not."""

    def __init__(self, spec: ReferenceSpec | None) -> None:
        self.spec = spec
        self.encoder: Any = None
        self.active = False
        self.loads = 0
        self._refused: str | None = None

    def reset(self) -> None:
        self.encoder = None
        self.active = False

    def apply(
        self, base: Pipeline, pipe: Pipeline, references: Sequence[EngineReference], dtype: Any, device: Any
    ) -> None:
        """Make ``pipe`` run with the IP-Adapter at the references' scale, or without it for none."""
        if not references:
            if self.active:
                base.unload_ip_adapter()  # the denoiser is shared: every task pipeline is itself again
                self.active = False
            return
        if self.spec is None:
            raise InvalidRequest("This model takes no reference images.", param="reference_images")
        if self._refused:
            raise InvalidRequest(self._refused, param="reference_images")
        _check_unet(pipe, "reference_images")
        if "ip_adapter_image" not in call_parameters(pipe):
            raise InvalidRequest(
                f"This model's pipeline ({type(pipe).__name__}) takes no reference images with these controls.",
                param="reference_images",
            )
        encoder = self._encoder(dtype, device)
        if getattr(pipe, "image_encoder", None) is not encoder:
            from transformers import CLIPImageProcessor

            side = encoder.config.image_size
            pipe.register_modules(
                image_encoder=encoder, feature_extractor=CLIPImageProcessor(size=side, crop_size=side)
            )
        if not self.active:
            self._load(pipe)
        pipe.set_ip_adapter_scale(references[0].scale)

    def _encoder(self, dtype: Any, device: Any) -> Any:
        if self.encoder is None:
            assert self.spec is not None
            path = self.spec.image_encoder.expanduser()
            if not path.exists():
                raise ModelNotAvailable(f"IP-Adapter image encoder {path} does not exist.")
            from transformers import CLIPVisionModelWithProjection

            self.encoder = CLIPVisionModelWithProjection.from_pretrained(
                str(path), local_files_only=True, dtype=dtype
            ).to(device)
        return self.encoder

    def _load(self, pipe: Pipeline) -> None:
        assert self.spec is not None
        folder, weight_name = _weights(self.spec.path.expanduser(), self.spec.weight_name)
        try:
            pipe.load_ip_adapter(
                str(folder), subfolder="", weight_name=weight_name, image_encoder_folder=None, local_files_only=True
            )
        except (RuntimeError, ValueError, KeyError) as exc:
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            self._refused = f"The IP-Adapter does not fit this model ({why}); is it for another base model?"
            raise InvalidRequest(self._refused, param="reference_images") from exc
        self.active = True
        self.loads += 1


def _weights(path: Path, weight_name: str | None) -> tuple[Path, str]:
    """The directory and file name diffusers' ``load_ip_adapter`` wants, from a file or a directory."""
    if path.is_file():
        return path.parent, path.name
    if not path.is_dir():
        raise ModelNotAvailable(f"IP-Adapter weights {path} do not exist.")
    if weight_name:
        return path, weight_name
    found = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    if len(found) != 1:
        raise ModelNotAvailable(f"IP-Adapter directory {path} holds {len(found)} weight files: set weight_name.")
    return path, found[0]


def reference_arguments(references: Sequence[EngineReference]) -> dict[str, Any]:
    """The pipeline call's reference images, all for the one IP-Adapter (their tokens side by side)."""
    images = [reference.image.convert("RGB") for reference in references]
    return {"ip_adapter_image": images[0] if len(images) == 1 else [images]}
