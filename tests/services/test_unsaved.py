"""Unsaved Diagnose results kept on the server: back as they were analysed, for their user only, until they expire."""

import json
import time

import numpy as np
import pytest

from domain import NotAllowed
from models.data.imaging import analysis_copy, decode_image
from services import unsaved
from services.unsaved import MANIFEST
from services.uploads import Upload
from settings import SAMPLE_DIR, get_settings
from tests.users import make_actor

LIMITS = {"max_bytes": 2**25, "max_pixels": 4096 * 4096}


def upload(name: str, data: bytes) -> Upload:
    return Upload(name, analysis_copy(decode_image(data, name, **LIMITS)))


@pytest.fixture
def uploads(db_url: str, dicom_bytes) -> list[Upload]:  # type: ignore[no-untyped-def]
    jpeg = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0]
    return [upload(jpeg.name, jpeg.read_bytes()), upload("head.dcm", dicom_bytes(modality="CT", patient_mrn="H 1/2"))]


def folder(user_id: int):  # type: ignore[no-untyped-def]
    return get_settings().artifact_dir / "unsaved" / str(user_id)


def test_kept_uploads_come_back_as_they_were_analysed(uploads: list[Upload]) -> None:
    actor = make_actor("clinician")
    unsaved.keep(actor, uploads, shown_anyway={uploads[1].decoded.sha256, "not one of them"})
    kept = unsaved.restore(actor)
    assert kept is not None and kept.unreadable == 0
    assert [u.name for u in kept.uploads] == [uploads[0].name, "head.dcm"]
    for before, after in zip(uploads, kept.uploads, strict=True):
        assert np.array_equal(before.decoded.rgb, after.decoded.rgb)
        assert after.decoded.stored_bytes == before.decoded.stored_bytes
        assert (after.decoded.sha256, after.decoded.image_format, after.decoded.modality) == (
            before.decoded.sha256,
            before.decoded.image_format,
            before.decoded.modality,
        )
    assert kept.uploads[1].decoded.patient_mrn == "H 1/2" and kept.uploads[1].decoded.modality == "CT"
    assert kept.shown_anyway == {uploads[1].decoded.sha256}
    # Nothing of the DICOM's person is kept: only the stored pixels and the header fields the record keeps.
    assert not any(b"Doe" in path.read_bytes() for path in folder(actor.user_id).iterdir())


def test_they_are_their_users_own_and_replaced_whole(uploads: list[Upload]) -> None:
    me, other = make_actor("clinician"), make_actor("admin")
    unsaved.keep(me, uploads)
    assert unsaved.restore(other) is None
    unsaved.keep(me, uploads[:1])
    assert [u.name for u in unsaved.restore(me).uploads] == [uploads[0].name]  # type: ignore[union-attr]
    assert sorted(p.name for p in folder(me.user_id).iterdir()) == sorted(
        [MANIFEST, f"{uploads[0].decoded.sha256}{uploads[0].decoded.stored_suffix}"]
    )
    unsaved.keep(me, [])
    assert unsaved.restore(me) is None and not folder(me.user_id).exists()


def test_a_damaged_file_is_left_out_and_counted(uploads: list[Upload]) -> None:
    actor = make_actor("clinician")
    unsaved.keep(actor, uploads)
    damaged = folder(actor.user_id) / f"{uploads[0].decoded.sha256}{uploads[0].decoded.stored_suffix}"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    kept = unsaved.restore(actor)
    assert kept is not None and [u.name for u in kept.uploads] == ["head.dcm"] and kept.unreadable == 1


def test_they_expire_after_the_hours_set(uploads: list[Upload], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNSAVED_KEEP_HOURS", "2")
    get_settings.cache_clear()
    stale, fresh = make_actor("clinician"), make_actor("admin")

    def keep_aged(actor, seconds: float) -> None:  # type: ignore[no-untyped-def]
        unsaved.keep(actor, uploads)
        manifest = folder(actor.user_id) / MANIFEST
        manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"kept_at": time.time() - seconds}))

    keep_aged(stale, 2 * 3600 + 5)
    keep_aged(fresh, 2 * 3600 - 60)
    assert unsaved.sweep_expired() == 1  # the periodic sweep
    assert not folder(stale.user_id).exists()
    assert [u.name for u in unsaved.restore(fresh).uploads] == [u.name for u in uploads]  # type: ignore[union-attr]
    keep_aged(stale, 2 * 3600 + 5)
    assert unsaved.restore(stale) is None and not folder(stale.user_id).exists()  # the user's own next visit


def test_only_a_signed_in_user_keeps_anything(uploads: list[Upload]) -> None:
    with pytest.raises(NotAllowed):
        unsaved.keep(None, uploads)
    with pytest.raises(NotAllowed):
        unsaved.restore(None)
