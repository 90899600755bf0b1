"""Catalogue queries and import. Category pages use keyset pagination on (created_at, id), served by
the (category_id, active, created_at, id) index, so page 500 costs what page 1 costs."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from sqlalchemy import and_, delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from db.changes import catalogue_written
from db.models import Category, Customer, Outbox, Product, StockWatch
from services.errors import NotFound


async def list_categories(session: AsyncSession) -> list[tuple[Category, int]]:
    """Categories with their count of active products, in display order (empty ones left out)."""
    stmt = (
        select(Category, func.count(Product.id))
        .join(Product, and_(Product.category_id == Category.id, Product.active.is_(True)))
        .group_by(Category.id)
        .order_by(Category.position, Category.name)
    )
    return [(c, n) for c, n in (await session.execute(stmt)).all()]


@dataclass(frozen=True, slots=True)
class Page:
    products: list[Product]
    next_cursor: str | None  # cursor of the first item of the next page
    prev_cursor: str | None  # cursor of the first item of the previous page


def cursor_of(p: Product) -> str:
    """A product's place in its category's pages (created_at, id), as a button carries it."""
    return _key_cursor(p.created_at, p.id)


def _key_cursor(created_at: datetime, product_id: int) -> str:
    return f"{int(created_at.timestamp() * 1_000_000)}.{product_id}"


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    micros, pid = cursor.split(".")
    return datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC), int(pid)


async def category_page(
    session: AsyncSession, category_id: int, *, after: str | None = None, before: str | None = None, size: int = 6
) -> Page:
    """One page of a category, newest first. `after`: start at this cursor (inclusive);
    `before`: the page that ends just before this cursor. Cursor conditions are row comparisons on
    (created_at, id) so they are index range scans, not filters (bench/catalog_scale.py)."""
    key = tuple_(Product.created_at, Product.id)
    base = select(Product).where(Product.category_id == category_id, Product.active.is_(True))
    if before:
        stmt = (
            base.where(key > tuple_(*_parse_cursor(before)))
            .order_by(Product.created_at.asc(), Product.id.asc())
            .limit(size)
        )
        rows = list(reversed((await session.execute(stmt)).unique().scalars().all()))
        if not rows:
            return await category_page(session, category_id, size=size)
        return await category_page(session, category_id, after=cursor_of(rows[0]), size=size)
    stmt = base.order_by(Product.created_at.desc(), Product.id.desc())
    if after:
        stmt = stmt.where(key <= tuple_(*_parse_cursor(after)))
    rows = list((await session.execute(stmt.limit(size + 1))).unique().scalars().all())
    next_cursor = cursor_of(rows[size]) if len(rows) > size else None
    rows = rows[:size]
    prev_cursor = None
    if rows:
        first = rows[0]
        newer = await session.execute(
            base.where(key > tuple_(first.created_at, first.id))
            .with_only_columns(Product.id)
            .order_by(Product.created_at.asc(), Product.id.asc())
            .limit(1)
        )
        prev_cursor = cursor_of(first) if newer.first() else None
    return Page(rows, next_cursor, prev_cursor)


async def page_position(session: AsyncSession, page: Page, size: int) -> tuple[int, int]:
    """(this page's number from 1, the category's number of pages) for the pager's "2/5". One count
    over the category's index range, so it grows with the category, unlike `category_page`: it is
    asked only when there is more than one page, and the screen it goes on is cached
    (CATALOG_CACHE_SECONDS)."""
    first = page.products[0]
    key = tuple_(Product.created_at, Product.id)
    newer, total = (
        await session.execute(
            select(
                func.count(Product.id).filter(key > tuple_(first.created_at, first.id)), func.count(Product.id)
            ).where(Product.category_id == first.category_id, Product.active.is_(True))
        )
    ).one()
    number = -(-newer // size) + 1  # a page that starts mid-way (a stale cursor) counts as the next one
    return number, max(number, -(-total // size))


async def page_holding(session: AsyncSession, product: Product, size: int = 6) -> str | None:
    """The `after` cursor of the category page that holds `product` (None: the first page), so Back
    from a card returns to the page the customer came from: pages are counted from the newest."""
    key = tuple_(Product.created_at, Product.id)
    base = select(Product.id).where(Product.category_id == product.category_id, Product.active.is_(True))
    newer = (
        await session.execute(
            base.with_only_columns(func.count(Product.id)).where(key > tuple_(product.created_at, product.id))
        )
    ).scalar_one()
    start = newer // size * size
    if start == 0:
        return None
    row = (
        await session.execute(
            base.with_only_columns(Product.created_at, Product.id)
            .order_by(Product.created_at.desc(), Product.id.desc())
            .offset(start)
            .limit(1)
        )
    ).first()
    return None if row is None else _key_cursor(row[0], row[1])


async def get_product(
    session: AsyncSession, product_id: int | None = None, *, sku: str | None = None, active_only: bool = True
) -> Product:
    stmt = select(Product)
    stmt = stmt.where(Product.id == product_id) if product_id is not None else stmt.where(Product.sku == sku)
    if active_only:
        stmt = stmt.where(Product.active.is_(True))
    product = (await session.execute(stmt)).unique().scalar_one_or_none()
    if product is None:
        raise NotFound("catalog.product_gone")
    return product


# --- import ---------------------------------------------------------------------------------------


class ProductRow(BaseModel):
    sku: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    category: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    price_kes: int = Field(ge=1)  # whole shillings in the file
    price_usd: str  # "1234.56" in the file; converted to cents exactly (no floats)
    stock: int = Field(ge=0)
    photo_url: str | None = None
    active: bool = True

    @field_validator("price_usd", mode="before")
    @classmethod
    def _usd(cls, value: object) -> str:
        text = str(value).strip()
        whole, _, cents = text.partition(".")
        if not whole.isdigit() or (cents and (not cents.isdigit() or len(cents) > 2)) or text in ("0", "0.0", "0.00"):
            raise ValueError("must be a positive amount with at most two decimals, e.g. 499.00")
        return text

    @field_validator("category", "name", "description", "photo_url")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        """No control characters (PostgreSQL refuses NUL; the others garble a chat message)."""
        if value and any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
            raise ValueError("contains a control character")
        return value

    @field_validator("photo_url")
    @classmethod
    def _photo(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value or None

    @property
    def usd_cents(self) -> int:
        whole, _, cents = self.price_usd.partition(".")
        return int(whole) * 100 + int((cents + "00")[:2])


class ImportError_(ValueError):
    """A bad row: `line` (1-based line in the file, or item number) and `field` name the problem."""

    def __init__(self, line: int, field: str, message: str) -> None:
        super().__init__(f"line {line}, field {field}: {message}")
        self.line, self.field, self.message = line, field, message


def slugify(text: str) -> str:
    return "-".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())


def parse_catalog(path: Path) -> list[ProductRow]:
    """All rows of a CSV or YAML catalogue, validated; the first bad row raises ImportError_."""
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        raise ImportError_(0, "file", "unsupported file type (use .csv or .yaml)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportError_(text_line(path.read_bytes(), exc.start), "file", "not UTF-8 text") from None
    records = _yaml_records(text) if suffix in (".yaml", ".yml") else _csv_records(text)
    rows: list[ProductRow] = []
    seen: set[str] = set()
    for line, record, field_lines in records:
        record = {k: v for k, v in record.items() if v is not None}
        try:
            row = ProductRow.model_validate(record)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "row"
            raise ImportError_(field_lines.get(field, line), field, _describe(err)) from None
        if row.sku.upper() in seen:
            raise ImportError_(line, "sku", f"duplicate SKU {row.sku}")
        seen.add(row.sku.upper())
        rows.append(row)
    return rows


def _describe(err: ErrorDetails) -> str:
    """Pydantic's message plus the offending value, so the operator can find it in the file."""
    value = err.get("input")
    if err.get("type") == "missing" or isinstance(value, (dict, list)):
        return str(err["msg"])
    return f"{err['msg']} (got {str(value)[:40]!r})"


def text_line(data: bytes, offset: int) -> int:
    """1-based line number of a byte offset (for errors found before the text could be decoded)."""
    return data[:offset].count(b"\n") + 1


Record = tuple[int, dict[str, Any], dict[str, int]]  # (line of the record, fields, line of each field)


def _csv_records(text: str) -> list[Record]:
    """(first line of the record, its non-empty fields). A quoted description may span lines, so the
    line reported is where the record starts, which is where an editor shows it."""
    reader = csv.DictReader(io.StringIO(text))
    out: list[Record] = []
    try:
        for row in reader:
            if None in row:
                raise ImportError_(reader.line_num, "row", "more values than there are columns in the header")
            values = {k.strip(): v for k, v in row.items() if k}
            start = reader.line_num - sum(v.count("\n") for v in values.values() if v)
            out.append((start, {k: v for k, v in values.items() if v not in ("", None)}, {}))
    except csv.Error as exc:
        raise ImportError_(reader.line_num, "row", f"unreadable CSV: {exc}") from None
    return out


def _yaml_records(text: str) -> list[Record]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ImportError_(mark.line + 1 if mark else 0, "yaml", f"not valid YAML: {exc.problem}") from None
    finally:
        loader.dispose()
    if node is None:
        return []
    items = node.value if isinstance(node, yaml.SequenceNode) else None
    if items is None and isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "products" and isinstance(value, yaml.SequenceNode):
                items = value.value
    if items is None:
        raise ImportError_(1, "products", "expected a list of products (or a `products:` list)")
    out: list[Record] = []
    for item in items:
        try:
            data = yaml.safe_load(yaml.serialize(item))
        except yaml.YAMLError as exc:
            raise ImportError_(item.start_mark.line + 1, "row", f"not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ImportError_(item.start_mark.line + 1, "row", "each product must be a mapping")
        field_lines = {str(k.value): k.start_mark.line + 1 for k, _ in item.value}  # a mapping, checked above
        out.append((item.start_mark.line + 1, data, field_lines))
    return out


async def import_rows(session: AsyncSession, rows: list[ProductRow]) -> tuple[int, int]:
    """Upsert by SKU in the caller's transaction. Returns (created, updated).

    `stock` in the file is the merchant's free (sellable) level: after the import each product has
    exactly that many free units, whatever checkouts reserved or sold meanwhile; `reserved` and `sold`
    belong to orders and are left alone. (So a file exported earlier and imported back resets free
    stock to its old figures: use /restock to add or correct by a difference.)

    The existing products are locked (SELECT … FOR UPDATE) and read afresh before anything is
    written, in product-id order — the order checkout reserves in. A checkout holding a row makes the
    import wait and the level is then set over its reservation; a checkout arriving later waits and
    reserves from the new level. Neither change is lost, and the two cannot deadlock."""
    catalogue_written(session)
    categories = {c.name: c for c in (await session.execute(select(Category))).scalars()}
    existing = await _lock_products(session, [row.sku for row in rows])
    created = updated = 0
    for row in rows:
        cat = categories.get(row.category)
        if cat is None:
            cat = Category(
                slug=_free_slug(row.category, {c.slug for c in categories.values()}),
                name=row.category,
                position=len(categories),
            )
            session.add(cat)
            await session.flush()
            categories[row.category] = cat
        product = existing.get(row.sku)
        values = {
            "category_id": cat.id,
            "name": row.name,
            "description": row.description.strip(),
            "price_kes": row.price_kes * 100,
            "price_usd": row.usd_cents,
            "stock": row.stock,
            "photo_url": row.photo_url,
            "active": row.active,
        }
        if product is None:
            existing[row.sku] = product = Product(sku=row.sku, **values)
            session.add(product)
            created += 1
        else:
            for key, value in values.items():
                setattr(product, key, value)
            updated += 1
    await session.flush()
    return created, updated


_LOCK_BATCH = 500  # SKUs or ids per statement: well under every driver's bound-parameter limit


async def _lock_products(session: AsyncSession, skus: list[str]) -> dict[str, Product]:
    """The products with these SKUs by SKU, row-locked in ascending id order (across batches too) and
    refreshed from the locked rows, so what the import compares and writes is not a stale read."""
    ids: list[int] = []
    for i in range(0, len(skus), _LOCK_BATCH):
        ids += (await session.execute(select(Product.id).where(Product.sku.in_(skus[i : i + _LOCK_BATCH])))).scalars()
    ids.sort()
    found: dict[str, Product] = {}
    for i in range(0, len(ids), _LOCK_BATCH):
        stmt = (
            select(Product)
            .where(Product.id.in_(ids[i : i + _LOCK_BATCH]))
            .order_by(Product.id)
            .with_for_update(of=Product)
            .execution_options(populate_existing=True)
        )
        found.update((p.sku, p) for p in (await session.execute(stmt)).unique().scalars())
    return found


def _free_slug(name: str, taken: set[str]) -> str:
    """A slug not used yet: "Storage" and "storage!" are different names but would share one."""
    base = slugify(name)[:56] or "category"
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug


async def catalog_is_empty(session: AsyncSession) -> bool:
    return (await session.execute(select(func.count(Product.id)))).scalar_one() == 0


async def watch_product(session: AsyncSession, customer_id: int, product_id: int) -> None:
    """ "Notify me": remember that this customer wants to hear when the product is back (once)."""
    if await session.get(StockWatch, (customer_id, product_id)) is None:
        session.add(StockWatch(customer_id=customer_id, product_id=product_id))
        await session.flush()


async def stop_watching(session: AsyncSession, customer_id: int, product_id: int) -> None:
    """ "Stop alert": the customer no longer wants to hear when the product is back."""
    await session.execute(
        delete(StockWatch).where(StockWatch.customer_id == customer_id, StockWatch.product_id == product_id)
    )


async def is_watching(session: AsyncSession, customer_id: int, product_id: int) -> bool:
    """Whether the card shows "Stop alert" instead of "Notify me"."""
    found = await session.execute(
        select(StockWatch.product_id).where(StockWatch.customer_id == customer_id, StockWatch.product_id == product_id)
    )
    return found.first() is not None


async def take_watchers(session: AsyncSession, product_id: int) -> list[tuple[Customer, StockWatch]]:
    """The watchers of this product to tell it is back, with their watches: those with no message on
    its way (none queued yet, or the last one failed for good). The caller queues a message for each
    and links it (`watch.outbox_id`); the watch stays until the sender has sent that message, so an
    undelivered message does not silently end it, and a pending one is not queued again."""
    return [
        (customer, watch)
        for customer, watch in (
            await session.execute(
                select(Customer, StockWatch)
                .join(StockWatch, StockWatch.customer_id == Customer.id)
                .outerjoin(Outbox, Outbox.id == StockWatch.outbox_id)
                .where(StockWatch.product_id == product_id, (Outbox.id.is_(None)) | (Outbox.state != "pending"))
                .order_by(StockWatch.created_at, StockWatch.customer_id)
            )
        ).all()
    ]
