"""Settings: ``LIMNER_*`` environment variables over an optional ``limner.toml``, over laptop-safe defaults."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from limner.engines.catalog import BUILTIN_MODEL_ID, ModelEntry, default_models

DIALECTS = ("openai", "aigne", "aiml", "milady", "imagineart")


def config_path() -> Path:
    return Path(os.environ.get("LIMNER_CONFIG", "limner.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIMNER_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(None, description="Absolute base for URLs in responses, e.g. https://img.example.com")
    data_dir: Path = Path(".limner")
    signing_secret: str | None = Field(None, description="HMAC secret for media URLs; generated and kept in data_dir if unset")
    url_ttl_seconds: int = 3600
    embed_metadata: bool = True

    models: list[ModelEntry] = Field(default_factory=default_models)
    default_model: str = BUILTIN_MODEL_ID
    preload: bool = False

    mounts: dict[str, str] = Field(
        default_factory=lambda: {name: "" for name in DIALECTS},
        description="dialect -> path prefix; '' mounts at the root, a missing dialect is not mounted",
    )

    max_upload_bytes: int = 25 * 2**20
    max_image_pixels: int = 40_000_000
    fetch_allow_private: bool = False
    fetch_timeout: float = 10.0
    fetch_max_redirects: int = 3
    request_timeout: float = 300.0

    log_level: str = "INFO"
    log_format: str = "text"

    @field_validator("public_url")
    @classmethod
    def strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_path())

    @property
    def is_loopback_bind(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def with_overrides(self, **overrides: Any) -> Settings:
        return self.model_copy(update=overrides)
