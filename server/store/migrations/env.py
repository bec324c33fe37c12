"""Alembic environment: the engine comes from mailgate (Database.upgrade), or from
MAILGATE_DATABASE_URL when alembic runs on its own (`alembic check` in CI)."""
from __future__ import annotations

import os

from alembic import context

from mailgate.server.store.db import make_engine
from mailgate.server.store.models import Base

config = context.config
engine = config.attributes.get("engine") or make_engine(
    os.environ.get("MAILGATE_DATABASE_URL", "sqlite:///mailgate.db"))

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    context.run_migrations()
