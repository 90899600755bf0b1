"""Configuration from the environment (and an optional `.env`).

Every knob the shop has is here, so `.env.example` can document them all in one place and a bad value
stops start-up with one clear line instead of failing later in the middle of a payment.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_CALLBACK_TOKEN = 32


class Settings(BaseSettings):
    # An empty variable (`ADMIN_CHAT_ID=` as .env.example ships it) means "not set": its default applies.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    # Telegram
    bot_token: SecretStr = SecretStr("")
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_secret: SecretStr | None = None
    admin_chat_id: int | None = None
    admin_user_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    public_base_url: str | None = None
    port: int = Field(8080, ge=0, le=65535)  # 0: any free port (tests)
    # Address the HTTP server binds to: 0.0.0.0 for a container or behind a proxy on another host,
    # 127.0.0.1 when the proxy runs on this machine.
    host: str = "0.0.0.0"
    redis_url: str | None = None

    # Storage and shop rules
    database_url: str = "sqlite+aiosqlite:///./storefront.db"
    reservation_minutes: int = Field(30, ge=1, le=24 * 60)
    # The shop's time zone (an IANA name): every time a customer or an admin reads is in it.
    shop_timezone: str = "Africa/Nairobi"
    low_stock_threshold: int = Field(3, ge=0)
    return_days: int = Field(14, ge=0, le=365)  # days after delivery a buyer may ask to return items
    # How customers reach a person (/help, cancel notices, unpayable orders); empty: not shown.
    shop_phone: str = ""
    shop_whatsapp: str = ""
    shop_hours: str = ""
    page_size: int = Field(6, ge=1, le=20)
    # Catalogue screens (category list, pages, the product behind a card) are reused for this long (0 = never).
    catalog_cache_seconds: float = Field(2.0, ge=0, le=300)
    load_demo_catalog: bool = True
    # Run every scheduled job this often instead of its own interval (0 = each job's default).
    job_interval_override_seconds: float = Field(0, ge=0)
    log_level: str = "INFO"
    # text: `time LEVEL logger event key=value …`; json: one JSON object a line (log collectors).
    log_format: Literal["text", "json"] = "text"
    # GET /metrics answers only requests with `Authorization: Bearer <token>` when this is set.
    metrics_token: SecretStr | None = None
    # `storefront worker` serves GET /healthz, /readyz and /metrics (its own counters: notifications, DHL,
    # expiries, reconciliation) on WORKER_HOST:WORKER_PORT; port 0 picks a free one, `off` serves nothing.
    # Loopback by default (a scraper on another host needs WORKER_HOST=0.0.0.0, better with METRICS_TOKEN).
    # `storefront run` serves everything on PORT and ignores these.
    worker_host: str = "127.0.0.1"
    worker_port: int | None = Field(9101, ge=0, le=65535)

    # Abuse limits (each refusal gets a friendly reply)
    max_open_orders_per_customer: int = Field(3, ge=1)  # unpaid orders holding stock at once
    max_reserved_units_per_customer: int = Field(20, ge=1)  # units held by one customer's unpaid orders
    # Updates one Telegram user may send per second, sustained, and the burst allowed on top.
    throttle_updates_per_second: float = Field(3.0, gt=0)
    throttle_burst: int = Field(10, ge=1)
    # M-Pesa prompts one phone number may receive per hour, whoever asks for them.
    mpesa_prompts_per_phone_per_hour: int = Field(5, ge=1)

    # M-Pesa (Daraja)
    mpesa_base_url: str = "https://sandbox.safaricom.co.ke"
    mpesa_consumer_key: SecretStr | None = None
    mpesa_consumer_secret: SecretStr | None = None
    mpesa_shortcode: str | None = None
    mpesa_passkey: SecretStr | None = None
    mpesa_transaction_type: str = "CustomerPayBillOnline"
    mpesa_party_b: str | None = None
    mpesa_callback_token: SecretStr | None = None
    mpesa_query_after_seconds: int = Field(60, ge=1)
    # A Paybill (or Till) the customer can pay by hand when no STK push is possible; the account
    # number they type is this prefix followed by the order id. Empty: no manual instructions.
    mpesa_manual_paybill: str = ""
    mpesa_manual_account_prefix: str = ""
    # Optional: callbacks only from these networks (CIDRs, comma-separated), e.g. Safaricom's list.
    mpesa_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(default_factory=list)
    # Reverse proxies (CIDRs) whose client-address header is believed; empty: the TCP peer is the client.
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(default_factory=list)
    client_ip_header: str = "X-Forwarded-For"

    # Stripe
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    # Where Stripe sends the customer after paying: a t.me deep link back to the bot.
    shop_return_url: str = "https://t.me"

    # DHL
    dhl_api_key: SecretStr | None = None
    dhl_api_url: str = "https://api-eu.dhl.com/track/shipments"
    dhl_poll_seconds: int = Field(900, ge=1)
    dhl_give_up_days: int = Field(30, ge=1)
    dhl_min_interval_seconds: float = Field(5.0, ge=0)
    dhl_daily_budget: int = Field(250, ge=1)

    @field_validator("admin_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("worker_port", mode="before")
    @classmethod
    def _port_or_off(cls, value: object) -> object:
        """WORKER_PORT=off: no server in the worker (an empty value means the default, like every setting)."""
        if isinstance(value, str) and value.strip().lower() in ("off", "none"):
            return None
        return value

    @field_validator("mpesa_allowed_networks", "trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [
                ip_network(part.strip(), strict=False) for part in value.replace(";", ",").split(",") if part.strip()
            ]
        return value

    @field_validator("mpesa_callback_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_CALLBACK_TOKEN:
            raise ValueError(
                f"must be at least {MIN_CALLBACK_TOKEN} characters (it is the callback URL's only "
                "protection; e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator("telegram_api_url", "mpesa_base_url", "dhl_api_url", "public_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("mpesa_transaction_type")
    @classmethod
    def _txn_type(cls, value: str) -> str:
        allowed = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    @field_validator("shop_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # unknown, or not a zone at all ("../x", "zone.tab")
            raise ValueError("must be an IANA time zone name, e.g. Africa/Nairobi or Europe/Berlin") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return value

    @property
    def shop_zone(self) -> ZoneInfo:
        """SHOP_TIMEZONE as a zone (validated at load; ZoneInfo keeps one instance per name)."""
        return ZoneInfo(self.shop_timezone)

    @property
    def mpesa_configured(self) -> bool:
        return all(
            (
                self.mpesa_consumer_key,
                self.mpesa_consumer_secret,
                self.mpesa_shortcode,
                self.mpesa_passkey,
                self.mpesa_callback_token,
                self.public_base_url,
            )
        )

    @property
    def stripe_configured(self) -> bool:
        return bool(self.stripe_secret_key and self.stripe_webhook_secret)

    @property
    def webhook_mode(self) -> bool:
        """Updates arrive by webhook at PUBLIC_BASE_URL/telegram; otherwise the bot long-polls and the
        HTTP server has no Telegram route at all."""
        return bool(self.public_base_url)

    @property
    def webhook_secret(self) -> str:
        """The secret Telegram sends with each webhook update: the configured one, or one derived from the
        bot token so that every web process agrees on it without sharing another value."""
        if self.telegram_webhook_secret and self.telegram_webhook_secret.get_secret_value():
            return self.telegram_webhook_secret.get_secret_value()
        return hashlib.sha256(b"webhook:" + self.bot_token.get_secret_value().encode()).hexdigest()[:48]

    @property
    def mpesa_callback_url(self) -> str:
        token = self.mpesa_callback_token.get_secret_value() if self.mpesa_callback_token else ""
        return f"{self.public_base_url}/webhooks/mpesa/{token}"


class ConfigError(SystemExit):
    """Raised with one human line; exit code 2, no traceback."""

    def __init__(self, line: str) -> None:
        super().__init__(2)
        self.line = line


def describe_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    name = str(err["loc"][0]).upper() if err["loc"] else "configuration"
    return f"configuration error: {name}: {err['msg']}"


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # fields by name, validated (and refused) by pydantic
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
