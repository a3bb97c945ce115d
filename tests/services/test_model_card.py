"""Model cards: generated from a real tiny training run's record, with example images of its confusions made by
predicting its validation split once; an old record's missing fields read "not recorded"."""

from pathlib import Path

import pytest

from db.runs import create_run, finish_run, get_run, register_model_version
from db.session import session_scope
from domain import CLASSES, TumorClass
from models.evaluation import confusion_examples
from models.training.config import make_config
from services.auth import NotAllowed
from services.model_card import card_html, card_markdown, find_confusion_examples, version_card
from services.model_card_document import NOT_RECORDED, top_confusions
from services.training import record_training
from settings import SAMPLE_DIR
from tests.seed_runs import seed_run
from tests.users import make_actor

PER_CLASS = 6


@pytest.fixture(scope="module")
def tiny(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict]:
    """A real one-epoch CNN run on six sample images per class, recorded and registered: (version id, metrics)."""
    out = tmp_path_factory.mktemp("tiny-run")
    cfg = make_config(
        "torch", str(SAMPLE_DIR), "report", epochs=1, batch_size=16, max_images_per_class=PER_CLASS, output_dir=str(out)
    )
    result = record_training(cfg, output_dir=str(out))
    with session_scope() as session:
        from db.runs import list_model_versions

        version = next(v for v in list_model_versions(session=session) if v.artifact_path == str(result.best_path))
        return version.id, get_run(session=session, run_id=version.run_id).metrics


def rows_of(card, section: str, caption: str) -> dict[str, tuple[str, ...]]:
    table = next(t for t in card.section(section).tables if t.caption == caption)
    return {row[0]: row[1:] for row in table.rows}


@pytest.mark.slow
def test_the_card_of_a_tiny_trained_run_holds_its_per_class_figures(tiny) -> None:
    version_id, metrics = tiny
    card = version_card(version_id=version_id)
    per_class = rows_of(card, "Validation results", "Per class")
    markdown, html = card_markdown(card), card_html(card)
    for name in CLASSES:
        figures = metrics["val"]["per_class"][name]
        expected = (*(f"{figures[k]:.3f}" for k in ("precision", "recall", "f1")), str(figures["support"]))
        assert per_class[TumorClass(name).label] == expected
        assert f"| {TumorClass(name).label} | {' | '.join(expected)} |" in markdown
        assert f"<td>{TumorClass(name).label}</td>" + "".join(f"<td>{v}</td>" for v in expected) in html
    matrix = rows_of(card, "Validation results", "Confusion matrix (rows: the true class)")
    assert [list(map(int, matrix[TumorClass(n).label])) for n in CLASSES] == metrics["val"]["confusion_matrix"]
    data = dict(card.section("Data").facts)
    assert data["Images per class"] == f"capped at {PER_CLASS} (a quick run)"
    assert data["Split"].endswith(
        f"{metrics['split']['train']} training and {metrics['split']['val']} validation images"
    )
    calibration = dict(card.section("Calibration").facts)
    assert calibration["Temperature"] == f"{metrics['val']['calibration']['temperature']:.3f}"
    assert "Decision support only." in markdown and "Decision support only." in html


def test_example_images_come_from_one_prediction_of_the_validation_split_kept_beside_the_model(tiny) -> None:
    version_id, metrics = tiny
    with pytest.raises(NotAllowed):
        find_confusion_examples(make_actor("clinician"), version_id=version_id)
    count = find_confusion_examples(make_actor("admin"), version_id=version_id)
    assert count == metrics["split"]["val"]
    card = version_card(version_id=version_id)
    with session_scope() as session:
        from db.runs import get_model_version

        version = get_model_version(session=session, version_id=version_id)
        path, sha = version.artifact_path, version.sha256
    cached = confusion_examples.load(path, sha)
    assert confusion_examples.cache_path(path).is_file() and len(cached.files) == count
    # The cached answers are the model's own: they give the confusion matrix training recorded.
    assert cached.matrix() == metrics["val"]["confusion_matrix"]
    groups = {g.caption: g.examples for g in card.section("Known failure modes").examples}
    for true, predicted, images, _ in top_confusions(metrics["val"]):
        shown = groups[f"{TumorClass(true).label} read as {TumorClass(predicted).label}"]
        assert len(shown) == min(images, 3)
        assert all(e.thumbnail.startswith(b"\x89PNG") for e in shown)
        assert all((SAMPLE_DIR / e.file).is_file() for e in shown)
    assert not card.can_find_examples
    assert ("data:image/png;base64," in card_html(card)) == bool(top_confusions(metrics["val"]))
    # Another file under the same name gets no examples from this cache.
    assert confusion_examples.load(path, "0" * 64) is None


@pytest.mark.slow
def test_the_card_compares_the_version_with_the_active_one(tiny) -> None:
    version_id, metrics = tiny
    alone = version_card(version_id=version_id).section("Compared with the active version")
    assert alone.text == ("No version of this model is active.",)
    active_run = seed_run("torch", 0.9)
    with session_scope() as session:
        active = register_model_version(
            session=session,
            framework="torch",
            name="seeded",
            artifact_path="/m.pth",
            sha256="a" * 64,
            run_id=active_run,
            activate=True,
        ).id
    card = version_card(version_id=version_id)
    section = card.section("Compared with the active version")
    table = {row[0]: row[1:] for row in section.tables[0].rows}
    accuracy = metrics["val"]["accuracy"]
    assert table["validation accuracy"] == (
        f"{100 * accuracy:.1f} %",
        "90.0 %",
        f"{100 * (accuracy - 0.9):+.1f} points",
    )
    assert section.tables[0].columns[2] == f"active: version {active}"
    assert "different validation images" in section.text[0]
    assert version_card(version_id=active).section("Compared with the active version").text == (
        "This is the active version.",
    )


def test_an_old_run_record_shows_its_missing_fields_as_not_recorded(tiny, tmp_path: Path) -> None:
    with session_scope() as session:
        run = create_run(session=session, framework="torch", preset="report", params={}, dataset_path="/old")
        finish_run(
            session=session, run_id=run.id, metrics={"val": {"accuracy": 0.8}}, artifact_path=None, artifact_sha256=None
        )
        old = register_model_version(
            session=session,
            framework="torch",
            name="<b>old</b>",
            artifact_path=tmp_path / "gone.pth",
            sha256="b" * 64,
            run_id=run.id,
        ).id
        bare = register_model_version(
            session=session, framework="keras", name="no run", artifact_path=tmp_path / "x.keras", sha256="c" * 64
        ).id
    card = version_card(version_id=old)
    assert dict(card.section("Validation results").facts)["Accuracy"] == "80.0 %"
    assert set(rows_of(card, "Validation results", "Per class")["Glioma"]) == {NOT_RECORDED}
    assert dict(card.section("Calibration").facts)["Temperature"] == NOT_RECORDED
    assert dict(card.section("Data").facts)["Folder fingerprint (sha256 of the labelled content)"] == NOT_RECORDED
    assert dict(card.section("Inference time and memory").facts)["Model file"] == "missing"
    assert "no out-of-distribution statistics" in card.section("Out-of-distribution check").text[0]
    html = card_html(card)
    assert "&lt;b&gt;old&lt;/b&gt;" in html and "<b>old</b>" not in html
    bare_card = version_card(version_id=bare)
    assert dict(bare_card.section("Recipe").facts)["Preset"] == NOT_RECORDED
    assert bare_card.section("Validation results").text == ("Not recorded.",)
    assert NOT_RECORDED in card_markdown(bare_card)


def test_the_recipe_names_the_checkpoint_a_run_started_from_and_the_teachers_it_learnt_from() -> None:
    from services.model_card_document import RunRecord, recipe_section

    record = {
        "framework": "torch",
        "config": {
            "init_from": "var/train/init-cnn.pth",
            "distill_from": "var/train/teacher-pair.npz",
            "distill_weight": 0.5,
            "distill_temperature": 2.0,
        },
        "metrics": {"split": {"distilled": {"images": 10, "teachers": [{"file": "a.pth"}, {"file": "b.keras"}]}}},
    }
    facts = dict(recipe_section(RunRecord.of(record)).facts)
    assert facts["Started from"] == "init-cnn.pth"
    assert facts["Distilled from"] == "a.pth, b.keras (weight 0.5, temperature 2.0)"
    plain = dict(recipe_section(RunRecord.of({"framework": "torch", "config": {}})).facts)
    assert "Started from" not in plain and "Distilled from" not in plain


def test_the_shipped_models_cards_give_the_pair_rule_and_review_flag_of_their_pair_report(tiny) -> None:
    import json

    from services.model_files import file_sha256
    from settings import DEFAULT_MODEL_FILES

    pair = json.loads((DEFAULT_MODEL_FILES["torch"].parent / "pair.json").read_text())
    with session_scope() as session:
        shipped = register_model_version(
            session=session,
            framework="keras",
            name="shipped",
            artifact_path=DEFAULT_MODEL_FILES["keras"],
            sha256=file_sha256(DEFAULT_MODEL_FILES["keras"]),
        ).id
    section = version_card(version_id=shipped).section("Together with the other model")
    facts = dict(section.facts)
    assert facts["Accuracy (cross-fitted)"] == f"{100 * pair['answer']['cross_fitted']['accuracy']:.1f} %"
    assert facts["Review flag"].startswith(f"the answer below {100 * pair['review']['chosen']['threshold']:.1f} %")
    candidates = {row[0]: row for row in section.tables[0].rows}
    assert candidates["MobileNetV2 alone"][1] == f"{100 * pair['mobilenet']['accuracy']:.1f} %"
    assert sum(name.endswith("(chosen)") for name in candidates) == 1
    # The tiny run's file has no pair report beside it.
    tiny_card = version_card(version_id=tiny[0])
    assert "No pair report beside this file" in tiny_card.section("Together with the other model").text[0]


def test_the_shipped_models_cards_give_their_measured_heatmap_figures(tiny) -> None:
    import json

    from services.model_files import file_sha256
    from settings import DEFAULT_MODEL_FILES

    measured = json.loads((DEFAULT_MODEL_FILES["torch"].parent / "heatmaps.json").read_text())["models"]
    for framework, name, method in (("torch", "cnn", "HiResCAM"), ("keras", "mobilenet", "Occlusion")):
        path = DEFAULT_MODEL_FILES[framework]
        figures = measured[name]
        assert figures["sha256"] == file_sha256(path), f"heatmaps.json was measured on another {name} file"
        with session_scope() as session:
            version = register_model_version(
                session=session,
                framework=framework,
                name=f"shipped-{name}",
                artifact_path=path,
                sha256=figures["sha256"],
            ).id
        section = version_card(version_id=version).section("Heatmap")
        assert section.text[0].startswith(f"{method} over a grid of {figures['grid']} cells")
        facts = dict(section.facts)
        assert facts["Heat inside the brain"] == f"{100 * figures['heat_in_brain']:.1f} %"
        assert (
            facts["Deletion area (map / random)"]
            == f"{figures['deletion_auc']:.3f} / {figures['deletion_auc_random']:.3f}"
        )
        assert len(section.tables[0].rows) == len(CLASSES)
        curves = {row[0]: row[1:] for row in section.tables[1].rows}
        middle = len(figures["curves"]["deletion"]) // 2
        half = [f"{figures['curves'][name][middle]:.2f}" for name in ("deletion", "deletion_random", "insertion")]
        assert list(curves["1/2"][:3]) == half
    assert "has not been measured" in version_card(version_id=tiny[0]).section("Heatmap").text[0]
