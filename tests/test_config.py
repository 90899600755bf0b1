"""Configuration: every variable documented, bad values stop start-up with one clear line (exit 2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_variable() -> None:
    documented = {line.split("=", 1)[0].strip() for line in (ROOT / ".env.example").read_text().splitlines()
                  if "=" in line and not line.lstrip().startswith("#")}
    assert {name.upper() for name in Settings.model_fields} == documented


@pytest.mark.parametrize("env, line", [
    ({"PORT": "eighty"}, "configuration error: PORT: Input should be a valid integer, unable to parse string as an integer"),
    ({"DATABASE_URL": "mysql://x"}, "configuration error: DATABASE_URL: Value error, must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"),
    ({"ADMIN_USER_IDS": "12,abc"}, None),
    ({"MPESA_TRANSACTION_TYPE": "Paybill"}, "configuration error: MPESA_TRANSACTION_TYPE: Value error, must be one of CustomerPayBillOnline, CustomerBuyGoodsOnline"),
    ({"TELEGRAM_API_URL": "ftp://x"}, "configuration error: TELEGRAM_API_URL: Value error, must start with http:// or https://"),
])
def test_bad_values_name_the_variable(env: dict[str, str], line: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None)
    assert err.value.code == 2
    name = next(iter(env))
    assert err.value.line.startswith(f"configuration error: {name}:")
    if line:
        assert err.value.line == line


def test_cli_run_without_token_exits_2_without_traceback(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"}
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("configuration error: BOT_TOKEN: is required to serve the bot "
                                   "(get one from @BotFather)")


def test_admin_ids_and_postgres_urls_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_USER_IDS", "12, 34;56")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    settings = load_settings(_env_file=None)
    assert settings.admin_user_ids == [12, 34, 56]
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
