"""The live view's data: queued and running runs with their job's progress, and a time-left estimate."""

from db.jobs import create_job, mark_running, set_progress
from db.run_views import live_runs
from db.runs import add_epoch, create_run, start_run
from db.session import session_scope
from tests.seed_runs import seed_run


def queue_run(epochs: int) -> tuple[int, int]:
    with session_scope() as session:
        job = create_job(session=session, kind="train", params={})
        run = create_run(
            session=session,
            framework="torch",
            preset="report",
            params={"epochs": epochs},
            dataset_path="/data",
            job_id=job.id,
        )
        return job.id, run.id


def test_runs_move_from_queued_to_preparing_to_training_with_a_time_left(db_url: str) -> None:
    finished = seed_run("torch", 0.9)
    job_id, run_id = queue_run(epochs=4)
    with session_scope() as session:
        assert [(r.run_id, r.phase) for r in live_runs(session=session)] == [(run_id, "queued")]
        mark_running(session=session, job_id=job_id, worker="w")
    with session_scope() as session:
        assert live_runs(session=session)[0].phase == "preparing"
        start_run(session=session, run_id=run_id, dataset_fingerprint="f" * 64)
        add_epoch(
            session=session,
            run_id=run_id,
            epoch=1,
            train_loss=1,
            train_acc=0.5,
            val_loss=1,
            val_acc=0.5,
            val_precision=0.5,
            val_recall=0.5,
            val_f1=0.5,
            lr=1e-3,
            duration_s=30.0,
            images_per_s=10.0,
        )
        # 10 batches per epoch; one epoch and a half done, at 3 s a batch.
        set_progress(session=session, job_id=job_id, current=15, total=40, message="epoch 2/4, batch 5/10")
    with session_scope() as session:
        [run] = live_runs(session=session)
        with_finished = live_runs(session=session, also=[finished])
    assert run.phase == "training" and run.fraction_done == 15 / 40 and run.message == "epoch 2/4, batch 5/10"
    assert run.seconds_left == 75.0
    assert [r.run_id for r in with_finished] == [run_id, finished] and with_finished[1].val_accuracy == 0.9
