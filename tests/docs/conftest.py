"""Sybil runs every Python and SQL block of README.md and docs/*.md against the test server.

Each document gets a database ``app`` made for it (and dropped after), a working directory of
its own, and libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD) pointed at the test
server, so that a snippet's ``PostgresUpsert("dbname=app", ...)`` runs as written. Blocks run
in order, on one pytest-xdist worker (``--dist loadfile``), sharing one namespace per document:

- a ``python`` block is executed; one whose first line names a file (``# myapp.py``) is written
  to that file in the document's directory instead, and a ``# test_*.py`` one is then run by
  pytest in a process of its own, beside the files written before it;
- a ``sql`` block is executed on ``dbname=app``;
- ``<!-- skip: next "reason" -->`` skips the next block, and says why (a fragment of a Django
  project, a Celery task module);
- ``<!-- invisible-code-block: python ... -->`` runs code the reader does not see: the setup a
  snippet takes for granted (a CSV file to read), or a check of what it did.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sybil import Example, Sybil
from sybil.integration.pytest import SybilFile
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

from tests.conftest import taking_turns

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "app"
# The first line of a block that is a file of its own: "# myapp.py" or "# test_myapp.py  ...".
FILE_LINE = re.compile(r"#\s*([\w/]+\.py)\b")
# libpq's variables for each conninfo key a snippet leaves out.
LIBPQ_VARIABLES = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}


def documents() -> list[Path]:
    """The documents whose blocks are run: the README and every page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def run_sql(example: Example) -> None:
    """A ``sql`` block: executed as it stands, on the document's database."""
    with psycopg.connect(f"dbname={DATABASE}", autocommit=True) as conn:
        conn.execute(sql.SQL(example.parsed))  # the statements the page shows


class PythonBlocks:
    """Python blocks: executed in the document's namespace, or written as files (see above)."""

    def __init__(self) -> None:
        self.code = PythonCodeBlockParser()

    def __call__(self, document: Any) -> Iterator[Any]:
        for region in self.code(document):
            source = str(region.parsed)
            named = FILE_LINE.match(source)
            if named:
                region.evaluator = write_file(named.group(1))
            yield region


def write_file(name: str) -> Any:
    """An evaluator that writes the block to ``name``; a test module is then run by pytest."""

    def evaluate(example: Example) -> None:
        path = Path.cwd() / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(example.parsed))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
        if not path.name.startswith("test_"):
            module = name.removesuffix(".py").replace("/", ".")
            command = [sys.executable, "-c", f"import {module}"]  # it imports, as written
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"

    return evaluate


SYBIL = Sybil(
    parsers=[
        PythonBlocks(),
        CodeBlockParser(language="sql", evaluator=run_sql),
        SkipParser(),
    ],
    path=str(ROOT),
    patterns=["README.md", "docs/*.md"],
    fixtures=["docs_document"],
    setup=lambda namespace: namespace.update(__name__="__main__"),  # as in a script of yours
)


class Documents(pytest.Collector):
    """The documents, collected beside tests/docs' own modules: they live outside tests/."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        for path in documents():
            yield SybilFile.from_parent(self, path=path, sybils=[SYBIL])


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # pytest offers every file of tests/docs to this hook, this one included: that is when the
    # documents are collected, so that `pytest` and `pytest tests/docs` run their blocks.
    if file_path == Path(__file__):
        return Documents.from_parent(parent, name="documents")
    return None


@pytest.fixture(scope="session")
def docs_server(dsn: str) -> dict[str, str]:
    """The libpq environment that points a bare ``dbname=app`` at the test server."""
    params = conninfo_to_dict(dsn)
    return {
        variable: str(params[key])
        for key, variable in LIBPQ_VARIABLES.items()
        if params.get(key) not in (None, "")
    }


@pytest.fixture(scope="module")  # a Sybil document is a module: once per document
def docs_document(
    dsn: str, docs_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A fresh database ``app`` (dropped after), libpq's environment set, and a working
    directory of its own."""
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
    saved = {name: os.environ.get(name) for name in [*docs_server, "TEST_DSN"]}
    with taking_turns(dsn, DATABASE):  # workers sharing a server share its app
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(drop)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        os.environ.update(docs_server)
        os.environ["TEST_DSN"] = f"dbname={DATABASE}"  # the Flask page's test reads it
        folder = tmp_path_factory.mktemp("document")
        previous = Path.cwd()
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(previous)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(drop)
