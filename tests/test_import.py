"""`storefront catalog import FILE`: upsert by SKU from CSV or YAML, all or nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Product
from services import catalog

CSV_OK = """sku,category,name,description,price_kes,price_usd,stock,photo_url
LAP-1,Laptops,ThinkPad T14,Grade A,55000,425.50,4,
NET-1,Networking,hAP ax2,New,12000,92,10,https://img.example/ax2.jpg
"""


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shop.db"}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


async def products_in(tmp_path: Path) -> dict[str, tuple[int, int, int]]:
    from db.session import make_engine, make_sessionmaker

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    async with make_sessionmaker(engine)() as session:
        rows = (await session.execute(select(Product))).unique().scalars().all()
        result = {p.sku: (p.price_kes, p.price_usd, p.stock) for p in rows}
    await engine.dispose()
    return result


async def test_csv_then_yaml_upsert_by_sku(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(CSV_OK)
    proc = run_cli(tmp_path, "catalog", "import", "a.csv")
    assert proc.returncode == 0, proc.stderr
    assert "2 created, 0 updated" in proc.stdout
    (tmp_path / "b.yaml").write_text(
        "products:\n"
        "  - {sku: LAP-1, category: Laptops, name: ThinkPad T14 Gen 2, price_kes: 57000, price_usd: '439.00', stock: 2}\n"
        "  - {sku: STO-1, category: Storage, name: 870 EVO, price_kes: 11200, price_usd: '86.5', stock: 15}\n")
    proc = run_cli(tmp_path, "catalog", "import", "b.yaml")
    assert proc.returncode == 0 and "1 created, 1 updated" in proc.stdout
    assert await products_in(tmp_path) == {"LAP-1": (5700000, 43900, 2), "NET-1": (1200000, 9200, 10),
                                           "STO-1": (1120000, 8650, 15)}


@pytest.mark.parametrize("name,content,where", [
    ("bad.csv", CSV_OK + "ACC-1,Accessories,Mouse,,abc,10,3,\n", "line 4, field price_kes"),
    ("bad.csv", CSV_OK + "ACC-1,Accessories,Mouse,,900,10.555,3,\n", "line 4, field price_usd"),
    ("bad.csv", CSV_OK + "LAP-1,Laptops,Dupe,,900,10,3,\n", "line 4, field sku"),
    ("bad.yaml", "products:\n  - {sku: A-1, category: X, name: Y, price_kes: 10, price_usd: '1', stock: 1}\n"
                 "  - {sku: A-2, category: X, name: Z, price_kes: 10, price_usd: '1', stock: -1}\n", "line 3, field stock"),
    ("bad.yaml", "products:\n  - {sku: 'has space', category: X, name: Y, price_kes: 10, price_usd: '1', stock: 1}\n",
     "line 2, field sku"),
])
async def test_a_bad_row_is_reported_and_nothing_is_written(tmp_path: Path, name: str, content: str, where: str) -> None:
    (tmp_path / name).write_text(content)
    proc = run_cli(tmp_path, "catalog", "import", name)
    assert proc.returncode == 1
    assert where in proc.stderr and "nothing was written" in proc.stderr
    assert "Traceback" not in proc.stderr
    if (tmp_path / "shop.db").exists():
        assert await products_in(tmp_path) == {}


def test_missing_file_and_unknown_type(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "catalog", "import", "nope.csv").returncode == 2
    (tmp_path / "x.json").write_text("{}")
    proc = run_cli(tmp_path, "catalog", "import", "x.json")
    assert proc.returncode == 1 and "unsupported file type" in proc.stderr


def test_demo_catalogue_is_realistic() -> None:
    rows = catalog.parse_catalog(Path(__file__).resolve().parent.parent / "catalog" / "demo.yaml")
    assert len(rows) >= 20
    assert {r.category for r in rows} == {"Refurbished laptops", "Workstations", "Networking", "Storage", "Accessories"}
    assert all(r.price_kes > 0 and r.usd_cents > 0 and r.description for r in rows)
