"""Start-up: bring the database to the newest schema and give each framework a model to use.

python -m services.bootstrap   (what `make run`, `make migrate` and compose's migrate service run)
"""

from db.migrate import upgrade_to_head
from db.session import session_scope
from services.model_files import register_default_models


def main() -> None:
    upgrade_to_head()
    with session_scope() as session:
        for version in register_default_models(session=session):
            print(f"registered the shipped {version.framework} model {version.name!r} and made it active")
    print("database ready")


if __name__ == "__main__":
    main()
