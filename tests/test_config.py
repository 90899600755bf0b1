"""Configuration: every variable documented, bad values stop start-up with one clear line (exit 2)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_variable() -> None:
    documented = {
        line.split("=", 1)[0].strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert {name.upper() for name in Settings.model_fields} == documented


@pytest.mark.parametrize(
    "env, line",
    [
        (
            {"PORT": "eighty"},
            "configuration error: PORT: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            {"DATABASE_URL": "mysql://x"},
            "configuration error: DATABASE_URL: Value error,"
            " must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL",
        ),
        ({"ADMIN_USER_IDS": "12,abc"}, None),
        (
            {"MPESA_TRANSACTION_TYPE": "Paybill"},
            "configuration error: MPESA_TRANSACTION_TYPE: Value error,"
            " must be one of CustomerPayBillOnline, CustomerBuyGoodsOnline",
        ),
        (
            {"TELEGRAM_API_URL": "ftp://x"},
            "configuration error: TELEGRAM_API_URL: Value error, must start with http:// or https://",
        ),
        ({"MPESA_CALLBACK_TOKEN": "guessable-token-31-characters.."}, None),
        ({"MPESA_ALLOWED_NETWORKS": "196.201.214.0/24,not-a-net"}, None),
        ({"TRUSTED_PROXIES": "10.0.0.0/33"}, None),
        (
            {"SHOP_TIMEZONE": "Africa/Nairobbi"},
            "configuration error: SHOP_TIMEZONE: Value error,"
            " must be an IANA time zone name, e.g. Africa/Nairobi or Europe/Berlin",
        ),
        ({"SHOP_TIMEZONE": "../../etc/passwd"}, None),
        ({"SHOP_TIMEZONE": "EAT"}, None),
    ],
)
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
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "configuration error: BOT_TOKEN: is required to serve the bot (get one from @BotFather)"
    )


def test_shop_timezone_defaults_to_nairobi_and_takes_any_iana_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_env_file=None).shop_zone.key == "Africa/Nairobi"
    monkeypatch.setenv("SHOP_TIMEZONE", "Europe/Berlin")
    assert load_settings(_env_file=None).shop_zone.key == "Europe/Berlin"


def test_admin_ids_and_postgres_urls_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_USER_IDS", "12, 34;56")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    settings = load_settings(_env_file=None)
    assert settings.admin_user_ids == [12, 34, 56]
    assert settings.database_url == "postgresql+asyncpg://u@h/db"


TOKEN = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345678"


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def _run_cli(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),  # this checkout's code, whichever checkout the environment installed
        "BOT_TOKEN": TOKEN,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        "PORT": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"],
        capture_output=True,
        text=True,
        env=base | env,
        cwd=tmp_path,
        timeout=90,
    )


def test_cli_run_with_the_bot_api_unreachable_exits_1_with_one_line(tmp_path: Path) -> None:
    proc = _run_cli(tmp_path, TELEGRAM_API_URL="http://127.0.0.1:9")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "outbox" not in proc.stderr  # no traceback, no job started
    assert last_line(proc.stderr).startswith("startup error: cannot reach the Bot API at http://127.0.0.1:9: ")
    assert TOKEN not in proc.stderr and TOKEN.split(":")[1] not in proc.stderr


def test_cli_run_with_the_database_unreachable_names_it_without_the_password(tmp_path: Path) -> None:
    proc = _run_cli(tmp_path, DATABASE_URL="postgresql+asyncpg://shop:s3cr3t-pw@127.0.0.1:9/shop")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert last_line(proc.stderr).startswith(
        "startup error: cannot reach the database postgresql+asyncpg://shop:***@127.0.0.1:9/shop"
    )
    assert "s3cr3t-pw" not in proc.stderr


async def test_cli_run_with_a_rejected_token_exits_2(tmp_path: Path) -> None:
    from aiohttp import web

    from tests.standins import BotAPIStandIn

    botapi = await BotAPIStandIn().start()

    async def unauthorized(method: str, params: dict[str, object]) -> web.Response:
        return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)

    botapi.responder = unauthorized
    try:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "BOT_TOKEN": TOKEN,
            "PORT": "0",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
            "TELEGRAM_API_URL": botapi.url,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        await botapi.stop()
    stderr = err.decode()
    assert proc.returncode == 2
    assert "Traceback" not in stderr
    assert (
        last_line(stderr)
        == f"startup error: BOT_TOKEN: the Bot API at {botapi.url} rejected the token (401 Unauthorized)"
    )
    assert [c.method for c in botapi.calls] == ["getMe:rejected"]  # nothing else was tried


def test_env_example_as_shipped_is_a_valid_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copied to .env (or used as a systemd EnvironmentFile) before every value is filled in, its empty
    variables mean "not set": the shop starts on the defaults instead of refusing `ADMIN_CHAT_ID=`."""
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    from_file = load_settings()
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            monkeypatch.setenv(name.strip(), value)
    (tmp_path / ".env").unlink()
    from_environment = load_settings()
    for settings in (from_file, from_environment):
        assert settings.admin_chat_id is None and settings.admin_user_ids == []
        assert settings.public_base_url is None and not settings.webhook_mode
        assert settings.mpesa_callback_token is None and not settings.mpesa_configured
        assert settings.log_format == "text" and settings.port == 8080


def test_worker_port_defaults_on_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKER_PORT", raising=False)
    assert Settings(_env_file=None).worker_port == 9101  # type: ignore[call-arg]
    monkeypatch.setenv("WORKER_PORT", "off")
    assert Settings(_env_file=None).worker_port is None  # type: ignore[call-arg]
    monkeypatch.setenv("WORKER_PORT", "9200")
    assert Settings(_env_file=None).worker_port == 9200  # type: ignore[call-arg]
