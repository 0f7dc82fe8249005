"""Settings: ``LIMNER_*`` environment variables over an optional ``limner.toml``, over laptop-safe defaults."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from limner.config.defaults import BUILTIN_MODEL_ID, default_models
from limner.engines.catalog import EngineOptions, LoraEntry, ModelEntry, did_you_mean
from limner.media.watermark import MAX_PAYLOAD_BYTES

MIN_PUBLIC_SECRET = 24
"""Shortest admin/metrics token accepted on a non-loopback bind."""
DIALECTS = ("openai", "aigne", "aiml", "milady", "imagineart")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""The names a loopback bind answers to unless ``allowed_hosts`` says otherwise."""

NameList = Annotated[list[str], NoDecode]
"""A list setting that reads ``a,b,c`` from the environment (or a list in ``limner.toml``)."""


def config_path() -> Path:
    return Path(os.environ.get("LIMNER_CONFIG", "limner.toml"))


class ConfigError(ValueError):
    """The configuration does not load; the message names the file (or variable), the key and why."""


class CheckedTomlSource(TomlConfigSettingsSource):
    """``limner.toml``, refusing top-level keys that name no setting: a misspelt one would otherwise be
    ignored and its default used in silence."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        super().__init__(settings_cls, toml_file=toml_file)
        known = list(settings_cls.model_fields)
        for key in self.toml_data:
            if key not in settings_cls.model_fields:
                raise ConfigError(f"{toml_file}: unknown setting '{key}'{did_you_mean(key, known)}")


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
    media_store: Literal["local", "s3"] = Field("local", description="local: files in data_dir/media; s3: a bucket")
    s3_bucket: str | None = Field(None, description="Bucket for media_store=s3")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, R2, ...); unset: AWS")
    s3_prefix: str = Field("", description="Key prefix inside the bucket, e.g. limner/")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = Field(None, description="unset: boto3's usual chain (AWS_* variables, profiles)")
    s3_secret_access_key: SecretStr | None = None
    s3_path_style: bool = Field(False, description="Bucket in the URL path (MinIO, Ceph, Garage) instead of the host")
    s3_direct_links: bool = Field(
        False, description="Hand out S3 presigned URLs (valid url_ttl_seconds) instead of limner's signed /media links"
    )
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

    allowed_hosts: NameList | None = Field(
        None,
        description="Host names this server answers to ('*.example.com' covers subdomains, '*' any); unset: "
        "the loopback names on a loopback bind, any host otherwise",
    )
    cors_origins: NameList = Field(
        default_factory=list, description="Browser origins other than the server's own allowed to call it (CORS)"
    )
    trusted_proxies: NameList = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Addresses (or networks) whose X-Forwarded-For / X-Forwarded-Proto are believed",
    )
    plain_http_tokens: Literal["revoke", "allow"] = Field(
        "revoke",
        description="revoke: a token an HTTPS-only dialect (ImagineArt) receives over plain HTTP from beyond "
        "this machine (not a loopback peer, or relayed by a proxy) is revoked, as its reference says; allow: keep it",
    )
    tls_certfile: Path | None = Field(None, description="PEM certificate: limner terminates TLS itself")
    tls_keyfile: Path | None = Field(None, description="PEM private key for tls_certfile")

    max_upload_bytes: int = 25 * 2**20
    max_json_bytes: int | None = Field(
        None, ge=1024, description="Largest JSON request body; unset: one base64 image of max_upload_bytes, plus 1 MiB"
    )
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest input image, in pixels, as uploaded")
    max_image_aspect_ratio: float = Field(
        8.0, ge=1.0, description="Longest over shortest side of an input image; a thinner one is a 400"
    )
    input_memory_mb: int = Field(
        1024,
        ge=1,
        description="Decoded input images all requests in flight may hold together; past it a request gets a "
        "429 with Retry-After",
    )
    decode_concurrency: int = Field(2, ge=1, description="Input images decoded at once (each at full size)")
    c2pa: Literal["on", "off"] = Field("on", description="Content Credentials: a signed C2PA manifest on every image")
    c2pa_cert: Path | None = Field(
        None, description="PEM certificate chain, signer first; unset: an untrusted development chain in data_dir"
    )
    c2pa_key: Path | None = Field(None, description="PEM private key of c2pa_cert (the algorithm follows the key)")
    c2pa_signer: str | None = Field(
        None, description="module:function that signs bytes with c2pa_cert's key (an HSM or KMS), instead of c2pa_key"
    )
    c2pa_include_prompt: bool = Field(False, description="Put the prompt in the manifest (off: prompts stay private)")
    invisible_watermark: Literal["off", "dwtDct", "dwtDctSvd"] = Field(
        "off",
        description="A mark hidden in every image's pixels (needs limner[watermark]): dwtDct as Stable Diffusion XL "
        "ships it, or dwtDctSvd (slower, survives a JPEG re-encode); neither survives a resize or crop",
    )
    invisible_watermark_payload: str = Field(
        "limner",
        description="What the invisible watermark says, 1 to 16 bytes of UTF-8 (limner provenance check reads it)",
    )
    fetch_allow_private: bool = False
    fetch_timeout: float = 10.0
    fetch_max_redirects: int = 3
    request_timeout: float = 300.0
    result_cache_bytes: int = Field(
        256 * 2**20,
        ge=0,
        description="Bytes of finished images kept for repeated seeded requests (limner.service.stages.cache); 0: off",
    )

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
    instance_heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often this process renews its lease on the accounts database"
    )
    instance_lease_seconds: float = Field(
        60.0, gt=0, description="A process silent this long is dead: its credit reservations are refunded"
    )

    # Durable jobs, idempotency keys and webhooks (see limner/service/job_store.py, limner/service/webhooks.py)
    idempotency_ttl_hours: float = Field(
        24.0, gt=0, description="How long an Idempotency-Key and its response are kept (and async jobs readable)"
    )
    idempotency_waiters_per_key: int = Field(
        8,
        ge=1,
        description="Retries that may wait, on each replica, for a still-running first request with their "
        "Idempotency-Key; more get 409 idempotency_key_in_use with Retry-After",
    )
    idempotency_waiters_per_consumer: int = Field(
        32,
        ge=1,
        description="Retries of one consumer that may wait, on each replica, for still-running first requests "
        "(all its keys together); more get 409 idempotency_key_in_use with Retry-After",
    )
    job_workers: int = Field(4, ge=1, description="Async jobs this process runs at once (more wait in the queue)")
    job_queue_per_consumer: int = Field(
        100, ge=1, description="Async jobs one consumer may have queued or running; more are refused with 429"
    )
    job_max_attempts: int = Field(
        3, ge=1, description="Runs of an async job interrupted by a dead server before it fails with a refund"
    )
    job_poll_seconds: float = Field(1.0, gt=0, description="How often a replica looks for queued jobs and cancels")
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="Time a webhook receiver has to answer")
    webhook_retry_seconds: float = Field(
        5.0, gt=0, description="First retry delay of a failed webhook; each retry waits about 4x longer"
    )
    webhook_max_attempts: int = Field(
        8, ge=1, description="Deliveries tried per event (8 attempts from 5 s span about 7.6 hours)"
    )
    webhook_allow_private: bool = Field(
        False, description="Allow webhook URLs on loopback and private addresses (refused by default: SSRF)"
    )
    webhook_secret_grace_hours: float = Field(
        24.0, ge=0, description="After a webhook secret is rotated, events are signed with the old one too this long"
    )

    # Gateway hot path (see limner/accounts/cache.py and limner/accounts/usage.py)
    accounts_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="Each replica re-checks cached tokens and consumer policies this often: a revocation takes "
        "effect everywhere within it (0: look both up on every request)",
    )
    usage_flush_seconds: float = Field(
        0.25,
        ge=0,
        description="Usage rows are written in batches this often (and on shutdown); a process killed with "
        "kill -9 loses about this long of them (0: write each request's row as it ends)",
    )

    torch_threads: int | None = Field(
        None, ge=1, description="Intra-op threads per model worker; unset: usable cores / model workers"
    )
    worker_processes: int = Field(
        1, ge=1, description="Server processes sharing this machine's cores (`limner serve --workers` sets it)"
    )

    @field_validator("allowed_hosts", "cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def split_names(cls, value: Any) -> Any:
        """``a, b`` (an environment variable) -> ``["a", "b"]``; lists pass through."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.count("/") != 2):
                raise ValueError(f"CORS origin {origin!r} must be scheme://host[:port] with no path, or '*'")
        return [origin.rstrip("/") for origin in value]

    @field_validator("trusted_proxies")
    @classmethod
    def check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted proxy {entry!r} is not an IP address or network") from None
        return value

    @field_validator("invisible_watermark_payload")
    @classmethod
    def check_payload(cls, value: str) -> str:
        if not 1 <= len(value.encode()) <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"the invisible watermark payload must be 1 to {MAX_PAYLOAD_BYTES} bytes of UTF-8")
        return value

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
        if self.media_store == "s3" and not self.s3_bucket:
            raise ValueError("media_store = 's3' needs s3_bucket (LIMNER_S3_BUCKET)")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: set both or neither")
        if self.instance_lease_seconds <= 2 * self.instance_heartbeat_seconds:
            raise ValueError(
                "instance_lease_seconds must exceed twice instance_heartbeat_seconds, or a live process "
                "that missed one heartbeat would be taken for dead and its reservations refunded"
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
        return init_settings, env_settings, CheckedTomlSource(settings_cls, toml_file=config_path())

    @property
    def is_loopback_bind(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def json_body_limit(self) -> int:
        """The JSON body cap: ``max_json_bytes``, or room for one base64 image at the upload cap."""
        return self.max_json_bytes or self.max_upload_bytes * 4 // 3 + 2**20

    @property
    def form_body_limit(self) -> int:
        """The multipart body cap: sixteen files at the upload cap, plus 1 MiB of fields."""
        return 16 * self.max_upload_bytes + 2**20

    @property
    def host_patterns(self) -> tuple[str, ...]:
        """The hosts requests may name: ``allowed_hosts``; else loopback names on a loopback bind, else any."""
        if self.allowed_hosts is not None:
            return tuple(self.allowed_hosts)
        if not self.is_loopback_bind:
            return ("*",)
        public = urlsplit(self.public_url).hostname if self.public_url else None
        return (*LOOPBACK_HOSTS, public) if public else LOOPBACK_HOSTS

    def secret(self, name: str) -> str | None:
        """A secret setting's value (a ``SecretStr`` when loaded, a plain string after ``with_overrides``)."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def with_overrides(self, **overrides: Any) -> Settings:
        return self.model_copy(update=overrides)


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment and ``limner.toml``, or a ``ConfigError`` that names what is wrong
    and where (every problem, not only the first), for the command line to print instead of a traceback."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = [_describe(problem) for problem in error.errors()]
        raise ConfigError(f"{config_path()} (or a LIMNER_* variable): " + "; ".join(problems)) from None


_NESTED: tuple[type[BaseModel], ...] = (Settings, ModelEntry, LoraEntry, EngineOptions)


def _describe(problem: Any) -> str:
    location = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"]).lstrip(".")
    if problem["type"] == "extra_forbidden":
        key = str(problem["loc"][-1])
        known = [name for model in _NESTED for name in model.model_fields]
        return f"unknown key '{location}'{did_you_mean(key, known)}"
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message
