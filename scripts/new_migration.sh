#!/usr/bin/env bash
# Developer tool: autogenerate the next Alembic revision from the table modules
# (hedui.node.store.schema.TABLE_MODULES) against a scratch SQLite store at head.
set -euo pipefail
cd "$(dirname "$0")/.."
msg=${1:?usage: scripts/new_migration.sh "message" NNNN}
rev=${2:?give the revision number, e.g. 0003}
PY=${PYTHON:-python}
db=$(mktemp -d)/scratch.db
"$PY" - "$db" "$msg" "$rev" <<'PYEOF'
import sys, pathlib, re
from hedui.node.store import migrate
from hedui.node.store.db import open_engine
db, msg, rev = sys.argv[1:]
eng = open_engine(f"sqlite:///{db}")
migrate.upgrade(eng)
vers = pathlib.Path(migrate.__file__).parent / "migrations" / "versions"
before = set(vers.iterdir())
migrate.autogenerate(eng, msg)
(new,) = set(vers.iterdir()) - before
text = new.read_text()
old = re.search(r"^revision = '([0-9a-f]+)'", text, re.M).group(1)
slug = re.sub(r"[^a-z0-9]+", "_", msg.lower()).strip("_")[:40]
new.write_text(text.replace(old, rev))
new.rename(vers / f"{rev}_{slug}.py")
print(vers / f"{rev}_{slug}.py")
PYEOF
