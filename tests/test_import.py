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
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )


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
        "  - {sku: LAP-1, category: Laptops, name: ThinkPad T14 Gen 2, price_kes: 57000, price_usd: '439.00',"
        " stock: 2}\n"
        "  - {sku: STO-1, category: Storage, name: 870 EVO, price_kes: 11200, price_usd: '86.5', stock: 15}\n"
    )
    proc = run_cli(tmp_path, "catalog", "import", "b.yaml")
    assert proc.returncode == 0 and "1 created, 1 updated" in proc.stdout
    assert await products_in(tmp_path) == {
        "LAP-1": (5700000, 43900, 2),
        "NET-1": (1200000, 9200, 10),
        "STO-1": (1120000, 8650, 15),
    }


@pytest.mark.parametrize(
    "name,content,where",
    [
        ("bad.csv", CSV_OK + "ACC-1,Accessories,Mouse,,abc,10,3,\n", "line 4, field price_kes"),
        ("bad.csv", CSV_OK + "ACC-1,Accessories,Mouse,,900,10.555,3,\n", "line 4, field price_usd"),
        ("bad.csv", CSV_OK + "LAP-1,Laptops,Dupe,,900,10,3,\n", "line 4, field sku"),
        (
            "bad.yaml",
            "products:\n  - {sku: A-1, category: X, name: Y, price_kes: 10, price_usd: '1', stock: 1}\n"
            "  - {sku: A-2, category: X, name: Z, price_kes: 10, price_usd: '1', stock: -1}\n",
            "line 3, field stock",
        ),
        (
            "bad.yaml",
            "products:\n  - {sku: 'has space', category: X, name: Y, price_kes: 10, price_usd: '1', stock: 1}\n",
            "line 2, field sku",
        ),
    ],
)
async def test_a_bad_row_is_reported_and_nothing_is_written(
    tmp_path: Path, name: str, content: str, where: str
) -> None:
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


# --- the same import through bot.serve on the suite's database (SQLite and PostgreSQL) ---------------


async def test_import_upserts_on_both_backends(engine, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bot.serve import import_catalog
    from db.session import make_sessionmaker
    from tests.harness import make_settings
    from tests.standins import BotAPIStandIn

    settings = make_settings(engine, BotAPIStandIn())
    (tmp_path / "a.csv").write_text(CSV_OK)
    assert await import_catalog(settings, tmp_path / "a.csv") == 0
    (tmp_path / "b.yaml").write_text(
        "- sku: NET-1\n  category: Networking\n  name: hAP ax2\n  price_kes: 12500\n  price_usd: '96'\n"
        "  stock: 0\n  active: false\n"
    )
    assert await import_catalog(settings, tmp_path / "b.yaml") == 0
    (tmp_path / "c.csv").write_text(CSV_OK.replace("425.50", "425.5.0"))
    assert await import_catalog(settings, tmp_path / "c.csv") == 1
    out = capsys.readouterr()
    assert "2 created, 0 updated" in out.out and "0 created, 1 updated" in out.out
    assert "line 2, field price_usd" in out.err and "nothing was written" in out.err
    async with make_sessionmaker(engine)() as session:
        rows = {p.sku: p for p in (await session.execute(select(Product))).unique().scalars()}
    assert rows["LAP-1"].price_usd == 42550 and rows["LAP-1"].photo_url is None
    assert (rows["NET-1"].price_kes, rows["NET-1"].stock, rows["NET-1"].active) == (1250000, 0, False)
    assert rows["NET-1"].photo_url is None  # the YAML row has no photo: the upsert sets what the file says


async def test_a_failing_write_leaves_nothing(session) -> None:  # type: ignore[no-untyped-def]
    """All or nothing at the database too: rows are written in the caller's one transaction."""
    rows = [
        catalog.ProductRow(sku="OK-1", category="Laptops", name="A", price_kes=1, price_usd="1", stock=1),
        catalog.ProductRow(sku="OK-2", category="Laptops", name="B", price_kes=1, price_usd="1", stock=1),
    ]

    async def import_then_fail() -> None:
        async with session.begin():
            await catalog.import_rows(session, rows)
            raise RuntimeError("a later failure in the same import")

    with pytest.raises(RuntimeError, match="a later failure"):
        await import_then_fail()
    assert (await session.execute(select(Product))).unique().scalars().all() == []


async def test_category_names_that_share_a_slug_both_import(session) -> None:  # type: ignore[no-untyped-def]
    from db.models import Category

    rows = [
        catalog.ProductRow(sku="S-1", category="Storage", name="A", price_kes=1, price_usd="1", stock=1),
        catalog.ProductRow(sku="S-2", category="storage!", name="B", price_kes=1, price_usd="1", stock=1),
    ]
    async with session.begin():
        assert await catalog.import_rows(session, rows) == (2, 0)
    slugs = sorted(c.slug for c in (await session.execute(select(Category))).scalars())
    assert slugs == ["storage", "storage-2"]


async def test_file_stock_is_the_free_level_set_over_what_orders_hold(session_factory) -> None:  # type: ignore[no-untyped-def]
    """The file's stock is the free level after the import; reserved and sold stay with their orders.
    The import compares with the row as it is now, not with an earlier read of the same session."""
    from tests.factories import make_order, make_product, stock_of

    pid = await make_product(session_factory, "LVL-1", stock=5)
    row = catalog.ProductRow(
        sku="LVL-1", category="Test", name="Product LVL-1", price_kes=1000, price_usd="8.00", stock=5
    )
    async with session_factory() as session:
        seen = await session.get(Product, pid)  # read (and kept) before a customer reserves 2
        assert seen is not None and seen.stock == 5
        await session.commit()  # its connection back to the pool; the object stays as it was read
        await make_order(session_factory, 1, [(pid, 2)])
        async with session.begin():
            assert await catalog.import_rows(session, [row]) == (0, 1)
    assert await stock_of(session_factory, pid) == (5, 2, 0)


# --- parse_catalog ------------------------------------------------------------------------------------


def _parse(tmp_path: Path, name: str, content: str | bytes) -> list[catalog.ProductRow]:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return catalog.parse_catalog(path)


def _error(tmp_path: Path, name: str, content: str | bytes) -> catalog.ImportError_:
    with pytest.raises(catalog.ImportError_) as info:
        _parse(tmp_path, name, content)
    return info.value


def test_parse_csv_values(tmp_path: Path) -> None:
    rows = _parse(tmp_path, "a.csv", "\ufeff" + CSV_OK.replace("425.50", "0.1"))  # Excel's BOM is fine
    assert [(r.sku, r.price_kes, r.usd_cents, r.stock, r.photo_url) for r in rows] == [
        ("LAP-1", 55000, 10, 4, None),
        ("NET-1", 12000, 9200, 10, "https://img.example/ax2.jpg"),
    ]
    assert _parse(tmp_path, "empty.csv", "sku,category,name,price_kes,price_usd,stock\n") == []


def test_csv_error_names_the_line_where_a_multiline_record_starts(tmp_path: Path) -> None:
    content = CSV_OK + 'ACC-1,Accessories,Mouse,"two\nline description",900,10,x,\n'
    err = _error(tmp_path, "a.csv", content)
    assert (err.line, err.field) == (4, "stock") and "'x'" in err.message


def test_csv_structural_errors(tmp_path: Path) -> None:
    err = _error(tmp_path, "a.csv", CSV_OK + "ACC-1,Accessories,Mouse,,900,10,3,,surplus\n")
    assert (err.line, err.field) == (4, "row")
    err = _error(tmp_path, "a.csv", CSV_OK.replace("ThinkPad", "Think\x00Pad"))
    assert (err.line, err.field, err.message) == (
        2,
        "name",
        "Value error, contains a control character (got 'Think\\x00Pad T14')",
    )
    err = _error(tmp_path, "a.csv", CSV_OK.encode() + b"ACC-1,Acc,Mouse \xff,,900,10,3,\n")
    assert (err.line, err.field, err.message) == (4, "file", "not UTF-8 text")
    err = _error(tmp_path, "a.csv", "sku,category,name,price_kes,price_usd\nA-1,X,Y,10,1\n")
    assert (err.line, err.field, err.message) == (2, "stock", "Field required")


def test_csv_duplicate_sku_ignores_case(tmp_path: Path) -> None:
    err = _error(tmp_path, "a.csv", CSV_OK + "lap-1,Laptops,Dupe,,900,10,3,\n")
    assert (err.line, err.field) == (4, "sku") and "duplicate" in err.message


def test_yaml_error_names_the_line_of_the_field(tmp_path: Path) -> None:
    content = (
        "products:\n"
        "  - sku: A-1\n    category: X\n    name: Y\n    price_kes: 10\n    price_usd: '1'\n    stock: 1\n"
        "  - sku: A-2\n    category: X\n    name: Z\n    price_kes: 10\n"
        "    photo_url: ftp://img.example/a.jpg\n    price_usd: '1'\n    stock: 1\n"
    )
    err = _error(tmp_path, "a.yml", content)
    assert (err.line, err.field) == (12, "photo_url") and "http(s)" in err.message
    fixed = content.replace("ftp://", "https://")
    assert [r.photo_url for r in _parse(tmp_path, "a.yaml", fixed)] == [None, "https://img.example/a.jpg"]
    err = _error(
        tmp_path, "a.yaml", fixed.replace("    price_kes: 10\n    photo_url", "    price_kes: 10.5\n    photo_url")
    )
    assert (err.line, err.field) == (11, "price_kes")


@pytest.mark.parametrize(
    "content,line,field",
    [
        ("products:\n  - {sku: A-1, name: [unclosed\n", 3, "yaml"),
        ("title: my shop\n", 1, "products"),
        ("products:\n  - just a string\n", 2, "row"),
        ("- {sku: A-1, category: X, name: Y, price_kes: 10, price_usd: '1', stock: 1, active: maybe}\n", 1, "active"),
    ],
)
def test_yaml_shape_errors(tmp_path: Path, content: str, line: int, field: str) -> None:
    err = _error(tmp_path, "a.yaml", content)
    assert (err.line, err.field) == (line, field)
