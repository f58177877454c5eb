"""The tests' PostgreSQL databases are reused: once a test is done with one, it is emptied for
the next test. Whatever a test did to it, the next one gets a database like a new one."""

from __future__ import annotations

from typing import Any

from accord_kit.testing import fixtures


def described(dbname: str) -> dict[str, Any]:
    """What a test could tell apart in a database: its settings, schemas (owner, rights,
    comment), relations, types and functions outside the system's."""
    with fixtures._pg_connect() as conn:
        settings = conn.execute(
            "SELECT s.setrole, s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = %s",
            (dbname,),
        ).fetchall()
        props = conn.execute(
            "SELECT datdba::regrole::text, datistemplate, datallowconn, datconnlimit, datacl "
            "FROM pg_database WHERE datname = %s",
            (dbname,),
        ).fetchall()
    with fixtures._pg_connect(dbname) as conn:
        user = "nspname !~ '^pg_' AND nspname <> 'information_schema'"
        return {
            "settings": settings,
            "database": props,
            "schemas": conn.execute(
                "SELECT nspname, nspowner::regrole::text, nspacl::text, obj_description(oid, 'pg_namespace') "
                f"FROM pg_namespace WHERE {user} ORDER BY 1"
            ).fetchall(),
            "relations": conn.execute(
                f"SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user}"
            ).fetchall(),
            "types": conn.execute(
                f"SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {user}"
            ).fetchall(),
            "functions": conn.execute(
                f"SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {user}"
            ).fetchall(),
        }


def test_a_database_emptied_for_the_next_test_is_like_a_new_one() -> None:
    new = fixtures._take_database()
    used = fixtures._take_database()
    try:
        like_new = described(new)
        with fixtures._pg_connect() as conn:
            conn.execute(f'ALTER DATABASE "{used}" SET synchronous_commit = off')
            conn.execute(f"ALTER ROLE CURRENT_USER IN DATABASE \"{used}\" SET work_mem = '8MB'")
        with fixtures._pg_connect(used) as conn:
            conn.execute("CREATE SCHEMA other")
            conn.execute("CREATE TABLE other.t (x int)")
            conn.execute("CREATE TYPE public.pair AS (a int, b int)")
            conn.execute("CREATE TABLE public.events (id bigserial PRIMARY KEY, state bytea)")
            conn.execute("CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
            conn.execute("REVOKE USAGE ON SCHEMA public FROM PUBLIC")
        assert described(used) != like_new
        old_name, used = used, fixtures._empty_database(used)
        assert used and used != old_name
        assert described(used) == like_new
        with fixtures._pg_connect() as conn:  # a finished test's client reconnecting finds nothing
            assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (old_name,)).fetchall()
    finally:
        with fixtures._pg_connect() as conn:
            for name in (new, used):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                if name in fixtures._all_databases:
                    fixtures._all_databases.remove(name)
