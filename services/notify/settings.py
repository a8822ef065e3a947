"""Notify's settings (environment prefix ``CASEFLOW_NOTIFY_``; nested with ``__``, e.g.
``CASEFLOW_NOTIFY_SMTP__HOST``, ``CASEFLOW_NOTIFY_DISPATCH__SMS__CONCURRENCY``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PlainSerializer, PlainValidator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.notify.channels.email import EmailSettings
from services.notify.channels.sms import SmsSettings
from services.notify.dispatcher import DispatchSettings
from services.notify.egress import AllowedNetwork, EgressPolicy, parse_allowed
from shared.settings import ServiceSettings

AllowedNetworks = Annotated[
    tuple[AllowedNetwork, ...],
    NoDecode,  # "127.0.0.1:8005,10.20.0.0/16", not JSON
    PlainValidator(parse_allowed),
    PlainSerializer(lambda entries: ",".join(map(str, entries)), return_type=str),
]


class NotifySettings(ServiceSettings):
    """Where notify listens and how it reaches people.

    A channel without settings is not configured: its notices end as dead letters
    ("channel not configured") that an operator can re-drive once it is.
    """

    model_config = SettingsConfigDict(
        env_prefix="CASEFLOW_NOTIFY_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    port: int = Field(default=8003, ge=1, le=65535)
    smtp: EmailSettings | None = Field(default=None, description="email over SMTP")
    sms: SmsSettings | None = Field(default=None, description="SMS through the gateway")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhook_allow_networks: AllowedNetworks = Field(
        default=(),
        description="internal networks webhooks may reach besides the public internet, "
        "comma-separated, each with an optional port: 127.0.0.1:8005 (one local "
        "receiver), 10.20.0.0/16 (a network), [::1]:8005 (IPv6 with a port)",
    )
    dispatch: DispatchSettings = DispatchSettings()
    notice_max_age_hours: float = Field(
        default=72.0,
        gt=0,
        description="events recorded longer ago are not notified (a replayed stream)",
    )

    def egress_policy(self) -> EgressPolicy:
        """Where webhooks may go (registration and delivery check the same)."""
        return EgressPolicy(self.webhook_allow_networks)
