"""Settings: ``LIMNER_*`` environment variables over an optional ``limner.toml``, over laptop-safe defaults."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from limner.engines.catalog import BUILTIN_MODEL_ID, ModelEntry, default_models

MIN_PUBLIC_SECRET = 24
"""Shortest admin/metrics token accepted on a non-loopback bind."""
DIALECTS = ("openai", "aigne", "aiml", "milady", "imagineart")


def config_path() -> Path:
    return Path(os.environ.get("LIMNER_CONFIG", "limner.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIMNER_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        None, description="Absolute base for URLs in responses, e.g. https://img.example.com"
    )
    data_dir: Path = Path(".limner")
    models_dir: Path | None = Field(None, description="Where `limner pull` puts models; default data_dir/models")
    signing_secret: str | None = Field(
        None, description="HMAC secret for media URLs; generated and kept in data_dir if unset"
    )
    url_ttl_seconds: int = 3600
    embed_metadata: bool = True

    models: list[ModelEntry] = Field(default_factory=default_models)
    default_model: str = BUILTIN_MODEL_ID
    preload: bool = False
    model_idle_unload_seconds: float = Field(
        900.0, ge=0, description="Unload a local model unused for this long (it loads again when asked); 0: never"
    )
    model_memory_budget_mb: int = Field(
        0, ge=0, description="Unload least recently used idle local models to keep weights under this; 0: no limit"
    )

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

    # Accounts: consumers, tokens, credits, usage (see limner/accounts)
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset: SQLite at data_dir/limner.db. postgresql://... for several replicas"
    )
    redis_url: str | None = Field(None, description="redis://... shares rate limits across replicas; unset: in-process")
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin/...; unset: the admin API is off")
    metrics_token: SecretStr | None = Field(None, description="Bearer token for /metrics; unset: /metrics is open")
    rate_limit_rpm: int | None = Field(None, ge=1, description="Default requests/min per consumer and model")
    rate_limit_ipm: int | None = Field(None, ge=1, description="Default images/min per consumer and model")
    reservation_ttl_seconds: float = Field(3600.0, gt=0, description="A credit reservation older than this is refunded")
    reservation_sweep_seconds: float = Field(60.0, gt=0, description="How often expired reservations are looked for")

    @field_validator("public_url")
    @classmethod
    def strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def refuse_unsafe(self) -> Settings:
        """Refuse combinations that would be unsafe or self-defeating, rather than start with them."""
        public = not self.is_loopback_bind
        for name in ("admin_token", "metrics_token"):
            secret = self.secret(name)
            if secret is not None and public and len(secret) < MIN_PUBLIC_SECRET:
                raise ValueError(
                    f"{name} must be at least {MIN_PUBLIC_SECRET} characters when binding to a public address "
                    f"({self.host}); generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        if self.reservation_ttl_seconds <= self.request_timeout:
            raise ValueError(
                "reservation_ttl_seconds must exceed request_timeout, or a slow generation's credit reservation "
                "would be refunded while it still runs"
            )
        return self

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

    def secret(self, name: str) -> str | None:
        """A secret setting's value (a ``SecretStr`` when loaded, a plain string after ``with_overrides``)."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def with_overrides(self, **overrides: Any) -> Settings:
        return self.model_copy(update=overrides)
