"""``manage.py backup_drill``: prove a backup of the portal's database restores and verifies.

pg_dump (custom format) of the database DATABASE_URL names, pg_restore into a new database,
``verify_audit`` on the restored copy, and the same chain head per organisation as the source
had in the very snapshot that was dumped. A management command rather than a shell script
because the source's heads must be read inside pg_dump's snapshot: that takes a database
connection held open in a transaction beside pg_dump, which Django already has.
"""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

TOOLS = ("pg_dump", "pg_restore", "createdb", "dropdb")
# PostgreSQL's NAMEDATALEN - 1; plain names only, so nothing needs quoting anywhere.
TARGET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
VERIFY_LINE = re.compile(r"^(?P<status>OK|FAILED) (?P<slug>[^:\s]+): (?P<rest>.*)$")
HEAD = re.compile(r"; head (?P<head>[0-9a-f]{64})$")
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.IGNORECASE)


@dataclass(frozen=True)
class DatabaseUrl:
    """A PostgreSQL URL; its password goes to the client tools in PGPASSWORD, never in argv."""

    parts: SplitResult

    @classmethod
    def parse(cls, url: str) -> "DatabaseUrl":
        # libpq reads postgres:// and postgresql:// only; dj-database-url also takes aliases.
        return cls(urlsplit(url)._replace(scheme="postgresql"))

    @property
    def name(self) -> str:
        return unquote(self.parts.path.lstrip("/"))

    @property
    def password(self) -> str:
        return unquote(self.parts.password or "")

    def for_database(self, name: str) -> "DatabaseUrl":
        return replace(self, parts=self.parts._replace(path="/" + quote(name)))

    def _with_userinfo(self, password: str | None) -> str:
        userinfo, at, host = self.parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        if at and password is not None and self.parts.password is not None:
            user = f"{user}:{password}"
        return urlunsplit(self.parts._replace(netloc=f"{user}{at}{host}"))

    def full(self) -> str:
        return urlunsplit(self.parts)

    def without_password(self) -> str:
        return self._with_userinfo(None)

    def redacted(self) -> str:
        return self._with_userinfo("***")


@dataclass(frozen=True)
class ChainLine:
    """One organisation's line of ``verify_audit`` output."""

    ok: bool
    head: str
    text: str


def parse_verify_output(output: str) -> dict[str, ChainLine]:
    chains = {}
    for line in output.splitlines():
        if match := VERIFY_LINE.match(line.strip()):
            head = HEAD.search(match["rest"])
            chains[match["slug"]] = ChainLine(
                ok=match["status"] == "OK" and head is not None,
                head=head["head"] if head else "",
                text=line.strip(),
            )
    return chains


def chain_differences(
    source: dict[str, ChainLine], restored: dict[str, ChainLine]
) -> dict[str, str]:
    """Why the restored copy does not match the source, by organisation slug."""
    problems = {}
    for slug in sorted(source.keys() | restored.keys()):
        if slug not in restored:
            problems[slug] = "missing from the restored copy"
        elif slug not in source:
            problems[slug] = "in the restored copy but not in the source"
        elif not source[slug].ok:
            problems[slug] = f"the source's chain does not verify: {source[slug].text}"
        elif not restored[slug].ok:
            problems[slug] = f"the restored chain does not verify: {restored[slug].text}"
        elif source[slug].head != restored[slug].head:
            problems[slug] = f"source head {source[slug].head}, restored head {restored[slug].head}"
    return problems


class Command(BaseCommand):
    help = (
        "Dump the portal's PostgreSQL database, restore it into a new database, run "
        "verify_audit there and compare each organisation's chain head with the source's."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--target",
            metavar="NAME",
            help="Database to restore into; it must not exist (default: <source>_drill_<time>).",
        )
        parser.add_argument(
            "--keep", action="store_true", help="Keep the restored database (dropped by default)."
        )
        parser.add_argument(
            "--dump",
            metavar="PATH",
            type=Path,
            help="Write the dump here and keep it; it must not exist (default: a temporary file).",
        )

    def handle(self, *args, target=None, keep=False, dump=None, **options):
        if connection.vendor != "postgresql":
            raise CommandError("The backup drill needs PostgreSQL: DATABASE_URL is not one.")
        self.source = DatabaseUrl.parse(settings.DATABASE_URL)
        try:
            self._drill(target, keep, dump)
        except CommandError as error:
            raise CommandError(self._redact(str(error))) from None

    def _drill(self, target: str | None, keep: bool, dump: Path | None) -> None:
        started = time.monotonic()
        self.tools = {tool: shutil.which(tool) for tool in TOOLS}
        missing = [tool for tool, path in self.tools.items() if path is None]
        if missing:
            raise CommandError(f"Not on PATH: {', '.join(missing)} (the PostgreSQL client tools).")
        suffix = f"_drill_{timezone.now():%Y%m%d%H%M%S}"
        target = target or self.source.name[: 63 - len(suffix)] + suffix
        if not TARGET_NAME.match(target):
            raise CommandError(f"Target {target!r}: letters, digits and _ only, up to 63.")
        if dump is not None and dump.exists():
            raise CommandError(f"Refusing to overwrite the dump file {dump}.")
        self._say(f"Backup drill: source {self.source.redacted()}, target database {target}")
        if self._database_exists(target):
            raise CommandError(f"Refusing to overwrite database {target}: it already exists.")
        with tempfile.TemporaryDirectory(prefix="ephemera-drill-") as work:
            dump_path = dump or Path(work) / f"{self.source.name}.dump"
            source_chains = self._dump_and_verify_source(dump_path)
            restored_url = self.source.for_database(target)
            self._step(2, f"createdb {target}; pg_restore --no-owner --no-acl into it")
            created = time.monotonic()
            self._tool("createdb", "--template=template0", target)
            self._say(f"      created in {time.monotonic() - created:.1f} s")
            try:
                restored_chains = self._restore_and_verify(dump_path, restored_url)
                self._compare(source_chains, restored_chains)
            finally:
                if keep:
                    self._say(f"Kept database {target} (--keep); drop it with dropdb {target}.")
                else:
                    dropped = time.monotonic()
                    self._tool("dropdb", target)
                    self._say(
                        f"Dropped database {target} in {time.monotonic() - dropped:.1f} s "
                        "(--keep keeps it)."
                    )
        if dump is not None:
            self._say(f"Kept the dump at {dump}.")
        count = len(source_chains)
        self._say(
            f"Backup drill passed: {count} organisation{'' if count == 1 else 's'} restored "
            f"with the same heads, in {time.monotonic() - started:.1f} s."
        )

    def _compare(self, source: dict[str, ChainLine], restored: dict[str, ChainLine]) -> None:
        self._step(4, "compare each organisation's chain head, source against restored copy")
        problems = chain_differences(source, restored)
        for slug in sorted(source.keys() | restored.keys()):
            if slug in problems:
                self._say(f"      FAILED {slug}: {problems[slug]}")
            else:
                self._say(f"      same {slug}: head {source[slug].head}")
        if problems:
            raise CommandError(f"Backup drill FAILED for: {', '.join(problems)}")

    def _dump_and_verify_source(self, dump_path: Path) -> dict[str, ChainLine]:
        """pg_dump in an exported snapshot while verify_audit reads the source in that snapshot.

        The seal task keeps appending seals; outside one snapshot the heads could move between
        the dump and the check and the drill would fail for nothing.
        """
        started = time.monotonic()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # Held open, idle once the check is done, until pg_dump (which took the snapshot
            # at its start) finishes: a server-wide idle timeout must not end it meanwhile.
            cursor.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
            self._step(
                1,
                f"pg_dump --format=custom --snapshot={snapshot} to {dump_path}; meanwhile "
                "verify_audit on the source in that snapshot",
            )
            with tempfile.TemporaryFile() as dump_errors:
                pg_dump = subprocess.Popen(  # noqa: S603 - fixed tool, arguments built here
                    [
                        self.tools["pg_dump"],
                        "--format=custom",
                        f"--snapshot={snapshot}",
                        f"--file={dump_path}",
                        f"--dbname={self.source.without_password()}",
                    ],
                    env=self._tool_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=dump_errors,
                )
                try:
                    output = io.StringIO()
                    # On a broken chain it raises after its lines, which say which one.
                    with contextlib.suppress(CommandError):
                        call_command("verify_audit", stdout=output)
                finally:
                    returncode = pg_dump.wait()
                dump_errors.seek(0)
                errors = dump_errors.read().decode(errors="replace")
        source_chains = parse_verify_output(output.getvalue())
        for chain in source_chains.values():
            self._say(f"      source: {chain.text}")
        if returncode != 0:
            raise CommandError(f"pg_dump failed (exit {returncode}): {errors.strip()}")
        size_mb, took = dump_path.stat().st_size / 1e6, time.monotonic() - started
        self._say(f"      dump: {size_mb:.1f} MB, written and checked in {took:.1f} s")
        return source_chains

    def _restore_and_verify(self, dump_path: Path, restored_url: DatabaseUrl) -> dict:
        started = time.monotonic()
        self._tool(
            "pg_restore",
            "--no-owner",
            "--no-acl",
            "--exit-on-error",
            f"--dbname={restored_url.without_password()}",
            str(dump_path),
        )
        self._say(f"      restored in {time.monotonic() - started:.1f} s")
        self._step(3, f"verify_audit with DATABASE_URL={restored_url.redacted()}")
        started = time.monotonic()
        verify = subprocess.run(  # noqa: S603 - this interpreter and this project's manage.py
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "verify_audit"],
            env={**self._tool_env(), "DATABASE_URL": restored_url.full()},
            capture_output=True,
            text=True,
            check=False,
        )
        restored_chains = parse_verify_output(verify.stdout)
        for chain in restored_chains.values():
            self._say(f"      restored: {chain.text}")
        if verify.returncode != 0 and not restored_chains:
            raise CommandError(f"verify_audit on the restored copy failed: {verify.stderr.strip()}")
        self._say(f"      verified in {time.monotonic() - started:.1f} s")
        return restored_chains

    def _database_exists(self, name: str) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            return cursor.fetchone() is not None

    def _tool_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.source.password:
            env["PGPASSWORD"] = self.source.password
        return env

    def _tool(self, tool: str, *arguments: str) -> None:
        """createdb/dropdb connect to the source database to run their statement."""
        if tool in ("createdb", "dropdb"):
            arguments = (f"--maintenance-db={self.source.without_password()}", *arguments)
        result = subprocess.run(  # noqa: S603 - fixed tool, arguments built here
            [self.tools[tool], *arguments],
            env=self._tool_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise CommandError(f"{tool} failed (exit {result.returncode}): {result.stderr.strip()}")

    def _step(self, number: int, text: str) -> None:
        self._say(f"[{number}/4] {text}")

    def _say(self, text: str) -> None:
        self.stdout.write(self._redact(text))

    def _redact(self, text: str) -> str:
        text = URL_PASSWORD.sub(r"\1:***@", text)
        for secret in {self.source.password, self.source.parts.password or ""} - {""}:
            text = text.replace(secret, "***")
        return text
