"""Service configuration, read from the environment (prefix ``JOBQL_``); no I/O at import."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobql.origins import normalize_origins
from jobql.tasks.contracts import Tier

DEMO_TASKS_FILE = Path(__file__).parent / "tasks" / "demo.toml"


class TierLimits(BaseModel):
    """Defaults for every caller of a tier; `jobql keys set-limits` overrides per caller."""

    rate_limit: int = Field(default=60, ge=1, description="submits per window")
    rate_window_seconds: int = Field(default=60, ge=1)
    daily_cost_cap_usd: float = Field(default=10.0, ge=0, description="per UTC day")
    max_active_jobs: int = Field(default=10, ge=1, description="queued + running")
    # Per caller, in each API process: open WebSocket connections, and subscriptions (and
    # other operations in flight) across them. Past either cap the connection is closed with
    # 4429 / the subscription is refused with an error.
    max_ws_connections: int = Field(default=10, ge=1)
    max_ws_subscriptions: int = Field(default=100, ge=1)


class RetentionOverride(BaseModel):
    """One task tier's retention windows; a field left out takes the global default."""

    event_log_seconds: int | None = Field(default=None, ge=1)
    job_seconds: int | None = Field(default=None, ge=1)


class ProviderSettings(BaseModel):
    """One model provider reached over HTTP, by the name task contracts use
    (`model = { provider = "<name>", ... }`)."""

    kind: Literal["openai", "anthropic"] = Field(
        default="openai",
        description="wire protocol: OpenAI-compatible chat completions (OpenAI, vLLM, "
        "Ollama, LiteLLM, Together, ...) or Anthropic's Messages API",
    )
    base_url: str = Field(
        description="e.g. https://api.openai.com/v1 or https://api.anthropic.com/v1"
    )
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="sent on every request")
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    # The longest silence allowed between two chunks of a stream (else PROVIDER_TIMEOUT);
    # generous, as reasoning models can think for minutes before their first token (the
    # job's deadline bounds the whole call anyway).
    read_timeout_seconds: float = Field(default=300.0, gt=0)
    # Streams at once to this provider from one process: a stream holds its connection for
    # its whole length, so this is at least the process's job cap (worker_concurrency), or
    # jobs past it wait for a connection to free up.
    max_connections: int = Field(default=256, ge=1)


class ApiDeprecation(BaseModel):
    """An API version being retired: its HTTP answers say so (RFC 9745 ``Deprecation``, RFC
    8594 ``Sunset``, and ``Link`` headers to the migration guide)."""

    deprecated_at: datetime = Field(description="since when the version is deprecated")
    sunset_at: datetime | None = Field(default=None, description="when it stops answering")
    link: str | None = Field(default=None, description="the migration guide's URL")


DEFAULT_TIER_LIMITS = {
    "free": TierLimits(
        rate_limit=10,
        daily_cost_cap_usd=1.0,
        max_active_jobs=2,
        max_ws_connections=4,
        max_ws_subscriptions=20,
    ),
    "standard": TierLimits(),
    "pro": TierLimits(
        rate_limit=600,
        daily_cost_cap_usd=100.0,
        max_active_jobs=50,
        max_ws_connections=50,
        max_ws_subscriptions=1000,
    ),
}


class Settings(BaseSettings):
    """Everything an operator can set. The defaults are the embedded default."""

    model_config = SettingsConfigDict(env_prefix="JOBQL_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./jobql.db"
    broadcast_url: str = "memory://"
    tasks_file: Path = DEMO_TASKS_FILE

    host: str = "127.0.0.1"
    port: int = 8000

    # Apply migrations when the API process starts (the embedded default does).
    migrate_on_start: bool = True
    # Create and print a development API key when no key exists yet. Unset: only in the
    # development profile on SQLite (the embedded default); true creates it anywhere.
    create_dev_key: bool = True
    # Run the worker inside the API process (embedded) instead of `jobql worker`.
    inline_worker: bool = True

    # Jobs one process runs at once. Streams wait on the provider, not the CPU, so this is
    # high; the process stops claiming earlier while its event loop runs late or its event
    # writer has a backlog (so a busy process leaves jobs to others instead of slowing all).
    worker_concurrency: int = Field(default=256, ge=1)
    worker_max_loop_lag_ms: float = Field(default=250.0, gt=0)
    worker_max_write_backlog: int = Field(default=1000, ge=1)
    # Jobs taken by one claim statement (the loop claims again at once while it gets full
    # batches).
    worker_claim_batch: int = Field(default=50, ge=1)
    worker_poll_seconds: float = Field(default=2.0, gt=0)
    # Workers look for expired leases every second, so a vanished worker's jobs are rescued
    # lease - renew to lease + 1 s after it vanished (10-16 s with these defaults). A
    # running job rides out a database outage of at least lease - renew - min(renew,
    # lease / 4) seconds (6 s with these defaults; 11 s if the outage starts right after a
    # renewal) before it is handed back for another attempt. Renewals cost one UPDATE per
    # worker per interval.
    lease_seconds: float = Field(default=15.0, gt=0)
    lease_renew_seconds: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    # On shutdown, how long running jobs may take to finish before they are handed back.
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)

    # A subscription with nothing to send for this long gets a Heartbeat.
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    # Output deltas after the first are coalesced within this window.
    coalesce_ms: float = Field(default=25.0, ge=0)

    # Per GraphQL document: nesting depth (introspection excluded), aliases, lexer tokens.
    max_query_depth: int = Field(default=10, ge=1)
    max_query_aliases: int = Field(default=30, ge=0)
    max_query_tokens: int = Field(default=2000, ge=10)

    # Rate, cost and concurrency limits (see docs/api.md). A tier missing here gets
    # "standard". JOBQL_TIER_LIMITS='{"free": {"rate_limit": 5}, ...}' replaces the table.
    enforce_limits: bool = True
    tier_limits: dict[str, TierLimits] = Field(default_factory=lambda: dict(DEFAULT_TIER_LIMITS))
    # Rate-limit counters live in memory (one process) or in Redis (shared by all processes).
    redis_url: str | None = None
    # When that Redis cannot be reached: "open" lets submits through (a warning is logged and
    # jobql_rate_limiter_unavailable_total counts them; cost and concurrency limits still
    # hold, from the database), "closed" refuses them with ServiceUnavailable.
    rate_limit_on_redis_error: Literal["open", "closed"] = "open"
    # How long an idempotency key is remembered.
    idempotency_window_seconds: int = Field(default=24 * 3600, ge=1)

    # Finished jobs (docs/jobs.md, "Retention"): their full event log is kept this long
    # (replay and resume by `after` work for that long), then compacted to the terminal event
    # and one OutputDelta holding the whole output; the job itself is deleted after
    # job_retention_seconds. Usage is never deleted. Per task tier (simple, generative,
    # agent): JOBQL_RETENTION='{"agent": {"event_log_seconds": 86400, "job_seconds": 604800}}'.
    event_log_retention_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    job_retention_seconds: int = Field(default=30 * 24 * 3600, ge=1)
    retention: dict[str, RetentionOverride] = Field(default_factory=dict)
    # Workers prune every prune_every_seconds (0: never; `jobql prune` still works), in
    # batches of prune_batch_size jobs (each its own short transaction), at most
    # prune_max_batches per pass.
    prune_every_seconds: float = Field(default=60.0, ge=0)
    prune_batch_size: int = Field(default=500, ge=1, le=5000)
    prune_max_batches: int = Field(default=20, ge=1)
    # A pause between two batches, so that writers waiting for SQLite's one write lock (and
    # PostgreSQL's row locks) get in between them.
    prune_pause_seconds: float = Field(default=0.2, ge=0)

    # Logs: one JSON object per line (or "text"); prompts and outputs are never logged
    # unless log_content is set.
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")
    log_content: bool = False

    # The profile sets the defaults of the switches below; a switch set on its own wins.
    # "development" (the embedded default): GraphiQL, introspection, queries over GET and a
    # development key (on SQLite), /metrics open. "production": all of those off, /metrics
    # only with metrics_token, and cors_origins (or ws_allowed_origins) must be set (the
    # server refuses to start otherwise). See docs/security.md.
    profile: Literal["development", "production"] = "development"
    graphiql: bool = True
    introspection: bool = True
    allow_get_queries: bool = True
    # "Did you mean ...?" in validation errors: names of fields a caller did not ask for.
    field_suggestions: bool = False
    # /metrics requires `Authorization: Bearer <token>` when set; without it, /metrics is
    # open in development and answers 404 in production.
    metrics_token: SecretStr | None = None
    # Signs the stream tickets in V1Job.eventsUrl / V2Job.eventsUrl (EventSource can send
    # no Authorization header). Every API process needs the same value. Unset: a random
    # secret per process on SQLite in development (one process); elsewhere no tickets are
    # issued (see docs/security.md).
    stream_ticket_secret: SecretStr | None = None
    # Per GraphQL document: directives in all (and on one field, fragment or operation), and
    # the estimated cost (a list counts its page size times what is selected in it, heavy
    # fields such as input and output their size class; see jobql/schema/cost.py).
    max_query_directives: int = Field(default=50, ge=1)
    max_query_directives_per_field: int = Field(default=4, ge=1)
    max_query_cost: int = Field(default=5000, ge=1)
    # An HTTP response above this is replaced by a RESPONSE_TOO_LARGE error.
    max_response_bytes: int = Field(default=10_000_000, ge=1024)
    max_page_size: int = Field(default=100, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    # Browser origins (scheme://host[:port], or "*") allowed to call the API from another
    # origin: CORS on HTTP and the Origin check of WebSocket handshakes use one list, the
    # union of cors_origins and ws_allowed_origins (its older name, still read); see
    # allowed_origins. Same-origin pages and non-browser clients need no entry.
    cors_origins: list[str] = Field(default_factory=list)
    ws_allowed_origins: list[str] = Field(default_factory=list)
    # Let browsers send cookies / HTTP auth to those origins' requests (CORS credentials
    # mode). API keys travel in the Authorization header, which needs no credentials, so
    # this stays off unless a proxy in front authenticates by cookie; never with "*".
    cors_allow_credentials: bool = False
    # How long a browser may cache a preflight answer.
    cors_max_age_seconds: int = Field(default=600, ge=0)
    max_subscriptions_per_connection: int = Field(default=100, ge=1)
    # API versions being retired, by name: {"v1": {"deprecated_at": "2027-01-01T00:00:00Z",
    # "sunset_at": "2027-07-01T00:00:00Z", "link": "https://.../migrating-to-v2"}}.
    api_deprecations: dict[str, ApiDeprecation] = Field(default_factory=dict)
    # Key revocation and WebSocket budgets (docs/security.md). A key lookup is cached for
    # key_cache_seconds while a shared event bus carries revocations to this process, and
    # for key_cache_fallback_seconds otherwise (memory:// bus, or the bus is down); open
    # WebSockets are re-checked at that fallback interval then too.
    key_cache_seconds: float = Field(default=30.0, ge=0)
    key_cache_fallback_seconds: float = Field(default=1.0, ge=0)
    # Failed key lookups (unknown or revoked keys) per client address: a burst, then this
    # many per second; past it requests get 429 with Retry-After (WebSockets close 4429)
    # without a database lookup.
    failed_auth_burst: int = Field(default=20, ge=1)
    failed_auth_per_second: float = Field(default=1.0, gt=0)
    # A WebSocket that sends no connection_init within this long is closed (4408).
    ws_connection_init_timeout_seconds: float = Field(default=10.0, gt=0)
    # WebSocket messages above this are refused: close 1009 (message too big).
    ws_max_message_bytes: int = Field(default=256_000, ge=1024)
    # HTTP request bodies above this are refused with 413; task inputs above max_input_bytes
    # (as JSON) get InvalidInput.
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_input_bytes: int = Field(default=256_000, ge=64)

    # Model providers besides the built-in "simulated", by name:
    # JOBQL_PROVIDERS='{"openai": {"base_url": "https://api.openai.com/v1", "api_key": "sk-..."}}'
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _apply_profile(self) -> Settings:
        explicit = self.model_fields_set
        production = self.profile == "production"
        defaults = {
            "graphiql": not production,
            "introspection": not production,
            "allow_get_queries": not production,
            "field_suggestions": False,
            "create_dev_key": not production and self.database_url.startswith("sqlite"),
        }
        for name, value in defaults.items():
            if name not in explicit:
                object.__setattr__(self, name, value)
        return self

    @model_validator(mode="after")
    def _check_origins(self) -> Settings:
        try:
            origins = self.allowed_origins
        except ValueError as exc:  # a value that is not an origin
            raise ValueError(f"JOBQL_CORS_ORIGINS / JOBQL_WS_ALLOWED_ORIGINS: {exc}") from None
        if self.cors_allow_credentials and "*" in origins:
            raise ValueError(
                'JOBQL_CORS_ALLOW_CREDENTIALS needs the origins listed one by one, not "*" '
                "(a credentialed request from any site would be let through)"
            )
        return self

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        tiers = {tier.value for tier in Tier}
        if unknown := sorted(set(self.retention) - tiers):
            raise ValueError(
                f"JOBQL_RETENTION: unknown task tier {', '.join(map(repr, unknown))} "
                f"(choose from {', '.join(sorted(tiers))})"
            )
        for tier in [None, *sorted(self.retention)]:
            override = self.retention[tier] if tier is not None else RetentionOverride()
            log_seconds = override.event_log_seconds or self.event_log_retention_seconds
            job_seconds = override.job_seconds or self.job_retention_seconds
            if job_seconds < log_seconds:
                where = f"JOBQL_RETENTION[{tier!r}]" if tier else "JOBQL_JOB_RETENTION_SECONDS"
                raise ValueError(
                    f"{where}: jobs must be kept at least as long as their event log "
                    f"({job_seconds} s < {log_seconds} s)"
                )
        return self

    @property
    def allowed_origins(self) -> list[str]:
        """The browser origins allowed cross-origin, for CORS and WebSocket handshakes:
        cors_origins and ws_allowed_origins together, in the form browsers send them
        (lowercase, no default port), each once."""
        return normalize_origins([*self.cors_origins, *self.ws_allowed_origins])

    def limits_for(self, tier: str) -> TierLimits:
        return self.tier_limits.get(tier) or self.tier_limits.get("standard") or TierLimits()
