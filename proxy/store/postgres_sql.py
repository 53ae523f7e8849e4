"""SQL text for one resource table, built once per statement shape from the schema."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from proxy.store.codec_postgres import column_type
from proxy.store.schema import Schema

MAX_PARAMETERS = 32767  # PostgreSQL's bind parameter limit per statement


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_ident(table: str) -> str:
    return ".".join(ident(part) for part in table.split("."))


class Statements:
    """Statements for ``table`` holding ``schema``'s records, one column per field."""

    def __init__(self, schema: Schema, table: str) -> None:
        self.schema = schema
        self.table_name = table
        self.table = table_ident(table)
        self.names = schema.field_names
        self.key = ident(schema.key)
        self.key_type = column_type(schema.key_field.type)
        self.types = {name: column_type(spec.type) for name, spec in schema.fields.items()}
        self._cache: dict[tuple[object, ...], str] = {}

    def columns(self, names: Sequence[str]) -> str:
        return ", ".join(ident(name) for name in names)

    def _param(self, n: int, name: str) -> str:
        return f"${n}::{self.types[name]}"

    # DDL --------------------------------------------------------------------------------

    def create(self) -> list[str]:
        """Idempotent DDL: the table, any missing column, the indexes."""
        defs = []
        for name, spec in self.schema.fields.items():
            column = f"{ident(name)} {self.types[name]}"
            if spec.is_key:
                column += " PRIMARY KEY"
            elif spec.type.container == "set" and not spec.nullable:
                column += " NOT NULL DEFAULT '{}'"
            elif not spec.nullable:
                column += " NOT NULL"
            defs.append(column)
        statements = [f"CREATE TABLE IF NOT EXISTS {self.table} ({', '.join(defs)})"]
        statements += [
            f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {ident(name)} {self.types[name]}"
            for name in self.names
            if name != self.schema.key
        ]
        base = self.table_name.rsplit(".", 1)[-1]
        for index in self.schema.indexes.values():
            unique = "UNIQUE " if index.unique else ""
            name = ident(f"{base}_{index.name}_idx"[:63])
            statements.append(
                f"CREATE {unique}INDEX IF NOT EXISTS {name} ON {self.table} ({ident(index.field)})"
            )
        return statements

    # single records ---------------------------------------------------------------------

    def get(self, names: Sequence[str]) -> str:
        return self._cached(
            ("get", *names),
            lambda: f"SELECT {self.columns(names)} FROM {self.table} WHERE {self.key} = $1",
        )

    def insert(self) -> str:
        return self._cached(("insert",), lambda: self._insert(1))

    def upsert(self, rows: int) -> str:
        def build() -> str:
            updates = [
                f"{ident(n)} = EXCLUDED.{ident(n)}" for n in self.names if n != self.schema.key
            ]
            action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
            return f"{self._insert(rows)} ON CONFLICT ({self.key}) {action}"

        return self._cached(("upsert", rows), build)

    def _insert(self, rows: int) -> str:
        width = len(self.names)
        values = ", ".join(
            "("
            + ", ".join(self._param(r * width + i + 1, n) for i, n in enumerate(self.names))
            + ")"
            for r in range(rows)
        )
        return f"INSERT INTO {self.table} ({self.columns(self.names)}) VALUES {values}"

    def update(self, names: Sequence[str]) -> str:
        def build() -> str:
            sets = ", ".join(f"{ident(n)} = {self._param(i + 2, n)}" for i, n in enumerate(names))
            return (
                f"UPDATE {self.table} SET {sets} WHERE {self.key} = $1 "
                f"RETURNING {self.columns(self.names)}"
            )

        return self._cached(("update", *names), build)

    def delete(self) -> str:
        return f"DELETE FROM {self.table} WHERE {self.key} = $1 RETURNING {self.key}"

    # many records -----------------------------------------------------------------------

    def by_index(self, field: str) -> str:
        return self._cached(
            ("index", field),
            lambda: (
                f"SELECT {self.columns(self.names)} FROM {self.table} "
                f"WHERE {ident(field)} = {self._param(1, field)} ORDER BY {self.key} LIMIT $2"
            ),
        )

    def list_page(self, filters: Sequence[tuple[str, bool]], after: bool) -> str:
        """``filters`` are (field, is_null); parameters: filter values, then the cursor key,
        then the limit."""

        def build() -> str:
            where, n = [], 0
            for name, is_null in filters:
                if is_null:
                    where.append(f"{ident(name)} IS NULL")
                else:
                    n += 1
                    where.append(f"{ident(name)} = {self._param(n, name)}")
            if after:
                n += 1
                where.append(f"{self.key} > ${n}::{self.key_type}")
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            return (
                f"SELECT {self.columns(self.names)} FROM {self.table}{clause} "
                f"ORDER BY {self.key} LIMIT ${n + 1}"
            )

        return self._cached(("list", tuple(filters), after), build)

    def batch_get(self) -> str:
        return (
            f"SELECT {self.columns(self.names)} FROM {self.table} "
            f"WHERE {self.key} = ANY($1::{self.key_type}[])"
        )

    def scan_page(self, by_range: bool, after: bool) -> str:
        """One keyset page of a scan segment.

        ``by_range`` (uuid keys): parameters lower bound, upper bound (NULL = none), then the
        optional cursor key and the page size. Otherwise the segment is a hash bucket:
        parameters segment, total segments, then the optional cursor key and the page size.
        """

        def build() -> str:
            if by_range:
                where = [f"{self.key} >= $1::uuid", f"($2::uuid IS NULL OR {self.key} < $2::uuid)"]
            else:
                where = [f"(hashtextextended({self.key}::text, 0) & 9223372036854775807) % $2 = $1"]
            n = 2
            if after:
                n += 1
                where.append(f"{self.key} > ${n}::{self.key_type}")
            return (
                f"SELECT {self.columns(self.names)} FROM {self.table} "
                f"WHERE {' AND '.join(where)} ORDER BY {self.key} LIMIT ${n + 1}"
            )

        return self._cached(("scan", by_range, after), build)

    def max_rows(self) -> int:
        return MAX_PARAMETERS // len(self.names)

    def _cached(self, key: tuple[object, ...], build: Callable[[], str]) -> str:
        sql = self._cache.get(key)
        if sql is None:
            sql = self._cache[key] = build()
        return sql
