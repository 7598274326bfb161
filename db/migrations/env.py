"""Alembic environment. db.engine runs it with an open connection in config.attributes (one
transaction, under a lock on Postgres). Without one (the `alembic` command, e.g. for writing
the next revision with `db.engine.alembic_config()`) it connects to `-x url=...`, else the URL
db.engine.resolve_url picks."""

from alembic import context

from db.engine import VERSION_TABLE, make_engine, resolve_url
from db.models import Base

config = context.config
options = {"target_metadata": Base.metadata, "version_table": VERSION_TABLE, "compare_type": True}


def _url() -> str:
    return resolve_url(context.get_x_argument(as_dictionary=True).get("url") or
                       config.get_main_option("sqlalchemy.url"))


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = make_engine(_url())
        with engine.connect() as connection:
            context.configure(connection=connection, **options)
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()
