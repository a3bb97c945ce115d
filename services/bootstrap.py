"""Start-up: bring the database to the newest schema and give each framework a model to use.

python -m services.bootstrap   (what `make run`, `make migrate` and compose's migrate service run)
"""

from db.migrate import upgrade_to_head
from db.runs import get_active_model
from db.session import session_scope
from db.users import count_users
from domain import FRAMEWORKS
from services.model_files import register_default_models
from services.predictors import ModelFileProblem, prepare_export


def main() -> None:
    upgrade_to_head()
    with session_scope() as session:
        for version in register_default_models(session=session):
            print(f"registered the shipped {version.framework} model {version.name!r} and made it active")
        nobody = count_users(session=session) == 0
        active = [get_active_model(session=session, framework=fw) for fw in FRAMEWORKS]
        active_files = [(v.framework, v.artifact_path, v.sha256) for v in active if v is not None]
    print("database ready")
    for framework, path, sha256 in active_files:
        try:
            print(prepare_export(framework, path, sha256))
        except (ModelFileProblem, OSError, ValueError) as exc:
            # The model is refused where it is used, with the reason; start-up goes on.
            print(f"{path}: no ONNX export made: {exc}")
    if nobody:
        # No default account exists: whoever installs the system creates the first admin.
        print(
            "no user exists yet: create the first admin with `make admin NAME=yourname` "
            "(python -m db.users create-admin yourname), then sign in"
        )


if __name__ == "__main__":
    main()
