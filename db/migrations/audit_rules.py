"""What the migrations that change the audit log share: its allowed actions and its append-only triggers."""

from collections.abc import Sequence

from alembic import op

REFUSAL = "the audit log is append-only"
AUTOINCREMENT = {"sqlite_autoincrement": True}
# SQLite's append-only triggers from revision 0004 on: no update, no delete, and no replacing insert (an INSERT OR
# REPLACE deletes the row it replaces without firing delete triggers).
SQLITE_TRIGGERS = {
    "audit_log_no_update": "BEFORE UPDATE ON audit_log",
    "audit_log_no_delete": "BEFORE DELETE ON audit_log",
    "audit_log_no_replace": "BEFORE INSERT ON audit_log WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)",
}


def actions_check(actions: Sequence[str]) -> str:
    return "action IN ({})".format(", ".join(f"'{a}'" for a in actions))


def sqlite_triggers(*, create: bool) -> None:
    for name, when in SQLITE_TRIGGERS.items():
        if create:
            op.execute(f"CREATE TRIGGER {name} {when} BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")


def set_actions(actions: Sequence[str]) -> None:
    """Allow exactly `actions` in the audit log. SQLite rebuilds the table to change a CHECK, which drops its
    triggers: they are made again at once. PostgreSQL changes the constraint in place."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        sqlite_triggers(create=False)
    with op.batch_alter_table(
        "audit_log", recreate="always" if sqlite else "auto", table_kwargs=AUTOINCREMENT
    ) as batch:
        batch.drop_constraint(op.f("ck_audit_log_action"), type_="check")
        batch.create_check_constraint(op.f("ck_audit_log_action"), actions_check(actions))
    if sqlite:
        sqlite_triggers(create=True)
