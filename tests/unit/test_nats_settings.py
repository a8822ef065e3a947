"""A service's NATS settings: one server or the nodes of a cluster, and stream replicas."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.intake.settings import IntakeSettings
from shared.adapters.bus.client import server_list


def test_a_cluster_is_given_as_its_nodes_separated_by_commas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CASEFLOW_INTAKE_NATS_URL", "nats://n1:4222, nats://n2:4222 ,tls://n3:4222")
    monkeypatch.setenv("CASEFLOW_INTAKE_NATS_REPLICAS", "3")
    settings = IntakeSettings()
    assert settings.nats_servers == ["nats://n1:4222", "nats://n2:4222", "tls://n3:4222"]
    assert settings.nats_url == "nats://n1:4222,nats://n2:4222,tls://n3:4222"
    assert settings.nats_replicas == 3


def test_one_server_and_one_copy_of_each_stream_by_default() -> None:
    settings = IntakeSettings()
    assert settings.nats_servers == ["nats://127.0.0.1:4222"]
    assert settings.nats_replicas == 1


@pytest.mark.parametrize(
    "url", ["nats://n1:4222,", "nats://n1:4222,,nats://n2:4222", "n1:4222", "http://n1:4222"]
)
def test_every_node_must_be_a_nats_url(url: str) -> None:
    with pytest.raises(ValidationError, match="must start with nats:// or tls://"):
        IntakeSettings(nats_url=url)
    with pytest.raises(ValueError, match="must start with nats:// or tls://"):
        server_list(url)


@pytest.mark.parametrize("replicas", [0, 6])
def test_replicas_are_what_a_jetstream_cluster_can_keep(replicas: int) -> None:
    with pytest.raises(ValidationError, match="nats_replicas"):
        IntakeSettings(nats_replicas=replicas)
