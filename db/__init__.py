"""The service's relational database: what the API owns and Temporal does not.

Idempotency records and webhook registrations (and, later, the pack registry and schedules) live
here, through SQLAlchemy 2 (async) with Alembic migrations. Runs do not: Temporal is the only
source of run state, and no table holds what a workflow also holds.

One URL setting chooses the database (`TASKRUNNER_DATABASE_URL`, see `db.engine.database_url`):

- unset: SQLite in the data dir (`var/taskrunner.db` for `taskrunner dev`) through aiosqlite,
  nothing to install; the API brings its schema up to date when it starts;
- `postgresql+asyncpg://user:password@host/dbname`: PostgreSQL (docker-compose gives TaskRunner
  its own database beside Temporal's); migrations are a separate step, `taskrunner db upgrade`,
  run before the API starts (the API refuses to start on a schema behind the code).

Modules: `db.engine` (the engine and sessions from the URL), `db.models` (the tables),
`db.migrate` (Alembic, driven from code), `db.idempotency` and `db.webhooks` (the stores the API
uses).

How to add a table and its migration
------------------------------------
1. Declare it in `db/models.py` on `Base` (or in a module of your own that `db/models.py`
   imports, so that Alembic's autogenerate sees it). Use portable types only (`String(n)`,
   `Integer`, `DateTime(timezone=True)`, `LargeBinary`, `JSON`, `Boolean`): every migration runs
   on SQLite and on PostgreSQL. Constraint names come from `Base.metadata`'s naming convention.
2. Write the migration: with a scratch database at the current head,

       export TASKRUNNER_DATABASE_URL=sqlite+aiosqlite:////tmp/scratch.db
       taskrunner db upgrade
       .venv/bin/alembic revision --autogenerate --rev-id 0002 -m "schedules"

   (`alembic.ini` at the repository root points at `db/migrations`; `--rev-id` is the next
   number after the last file's). Read what it wrote in `db/migrations/versions/` and fix it
   up: `down_revision` must be the previous head (one linear history; two engineers adding
   0002 at once is a conflict to resolve by renumbering one), and `alembic check` must then
   say "No new upgrade operations detected". SQLite cannot ALTER
   most things: use `op.batch_alter_table` for changes to existing tables.
3. Test against both databases: the `database_url` fixture of tests/conftest.py gives every test
   that takes it a SQLite and a PostgreSQL (a real server the test session starts) run, and
   tests/db/test_migrations.py checks the models and the migrations agree on both.
4. Stores take an `AsyncSession` or the `Database`; write in one short transaction each
   (`async with database.session() as s, s.begin(): ...`), and let unique constraints, not
   read-then-write, decide races.
"""
