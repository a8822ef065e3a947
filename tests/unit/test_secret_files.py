"""Secrets from files (issue 16): the database password, the SMS key and the SMTP password
can come from files (compose secrets) instead of the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.notify.channels.email import EmailSettings
from services.notify.channels.sms import SmsSettings
from services.processing.settings import ProcessingSettings
from shared.adapters.db import with_password_file
from shared.settings import load_settings

SMS = {"secret_id": "AKID", "sdk_app_id": "1400", "sign_name": "站", "template_id": "1"}


def secret(tmp_path: Path, text: str, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_database_password_comes_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = secret(tmp_path, "p@ss:w/rd\n")  # characters a URL must escape
    monkeypatch.setenv(
        "CASEFLOW_PROCESSING_DATABASE_URL", "postgresql+asyncpg://caseflow@db/caseflow"
    )
    monkeypatch.setenv("CASEFLOW_PROCESSING_DATABASE_PASSWORD_FILE", str(password))
    settings = load_settings(ProcessingSettings)
    assert settings.database_url == "postgresql+asyncpg://caseflow:p%40ss%3Aw%2Frd@db/caseflow"
    assert with_password_file("postgresql+asyncpg://c@db/x", None) == "postgresql+asyncpg://c@db/x"
    with pytest.raises(ValueError, match="keep one"):
        with_password_file("postgresql+asyncpg://c:other@db/x", password)
    with pytest.raises(ValueError, match="is empty"):
        with_password_file("postgresql+asyncpg://c@db/x", secret(tmp_path, "\n", "empty"))
    with pytest.raises(ValueError, match="can't read"):
        with_password_file("postgresql+asyncpg://c@db/x", tmp_path / "missing")


def test_the_sms_key_and_the_smtp_password_come_from_their_files(tmp_path: Path) -> None:
    sms = SmsSettings.model_validate({**SMS, "secret_key_file": str(secret(tmp_path, "k3y\n"))})
    assert sms.secret_key.get_secret_value() == "k3y"
    with pytest.raises(ValidationError, match="keep one"):
        SmsSettings.model_validate(
            {**SMS, "secret_key": "a", "secret_key_file": str(secret(tmp_path, "b"))}
        )
    with pytest.raises(ValidationError, match="is empty"):
        SmsSettings.model_validate({**SMS, "secret_key_file": str(secret(tmp_path, "", "e"))})
    smtp = EmailSettings.model_validate(
        {
            "host": "smtp.example",
            "username": "caseflow",
            "password_file": str(secret(tmp_path, "pw\n")),
        }
    )
    assert smtp.password is not None and smtp.password.get_secret_value() == "pw"
    # compose's defaults when the operator sets no SMTP login: an empty user, /dev/null
    none = EmailSettings.model_validate(
        {"host": "smtp.example", "username": "", "password_file": "/dev/null"}
    )
    assert none.username is None and none.password is None
