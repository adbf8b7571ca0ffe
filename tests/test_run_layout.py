"""sit_vqa.run_layout: the names of a run directory's parts, on real directories."""

from pathlib import Path

from sit_vqa import run_layout
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.run_layout import RunLayout, checkpoint_name, step_in_name, run_name, temporary_of


def test_checkpoint_names_and_steps():
    assert checkpoint_name(12) == "checkpoint-12" and step_in_name("checkpoint-12") == 12
    for other in ("checkpoint-", "checkpoint-1a", "final", "xcheckpoint-3", "checkpoint-3.partial"):
        assert step_in_name(other) is None, other


def test_checkpoints_are_listed_newest_first_by_step_not_by_name(tmp_path):
    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-9", "final", "damaged_checkpoints"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-11").write_text("a file, not a checkpoint")
    assert [p.name for p in RunLayout(tmp_path).checkpoints_newest_first()] == ["checkpoint-10", "checkpoint-9",
                                                                                "checkpoint-2"]
    assert RunLayout(tmp_path / "missing").checkpoints_newest_first() == []


def test_an_atomic_writes_temporaries_name_what_they_stand_for():
    assert temporary_of(".final.0123456789ab.partial") == "final"
    assert temporary_of(".data_report.json.0123456789ab.previous") == "data_report.json"
    for other in ("final", ".final.partial", ".final.0123456789ab.partial.txt", "x.final.0123456789ab.partial",
                  ".final.0123456789AB.partial", ".final.0123456789a.partial"):
        assert temporary_of(other) is None, other


def test_a_run_is_named_by_its_directory(tmp_path):
    assert run_name(tmp_path / "vqa_sit" / "final") == "vqa_sit"
    assert run_name(tmp_path / "vqa_sit" / "checkpoint-4") == "vqa_sit-checkpoint-4"
    assert run_name(tmp_path / "copied") == "copied"


def test_the_checkpoint_format_uses_the_layout_names():
    assert ckpt.BASE_MODEL_DIR == run_layout.BASE_MODEL_DIR
    run = Path("runs/x")
    assert RunLayout(run).final == run / "final" and RunLayout(run).checkpoint(3) == run / "checkpoint-3"
