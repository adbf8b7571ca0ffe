"""Instruction pools: the shipped pool reads, bad pools are refused with the file and the fix, and the join
gives every record one phrasing of its task, drawn with the seed and recorded."""

from collections import Counter
from pathlib import Path

import pytest
import yaml

from sit_vqa.data.prompts import SIT_TASK, load_instruction_pool
from sit_vqa.errors import ConfigError

from .test_join import QUESTION_TEXT, run_join

POOL = Path(__file__).resolve().parents[2] / "configs" / "prompts" / "instruction_pool.yaml"


def test_the_shipped_pool_has_phrasings_for_every_task_and_held_out_ones_apart():
    pool = load_instruction_pool(POOL)
    for kind in ("sit", "baseline", "describe"):
        assert len(pool.of(kind)) >= 3
    for prompt in ("sit", "baseline"):
        held_out = pool.held_out_of(prompt)
        assert held_out and not set(held_out) & set(pool.of(prompt))  # never trained on
    assert pool.of("sit")[0].startswith(SIT_TASK)  # the paper's phrasing is one of them


@pytest.mark.parametrize(("document", "message"), [
    ({"sit": ["Describe, then answer: {answer}"]}, r"uses \['answer'\]"),
    ({"describe": ["Describe {question}"]}, "may use no field"),
    ({"chat": ["hi"]}, r"unknown task\(s\) \['chat'\]"),
    ({"sit": "one phrasing"}, "must be a non-empty list of non-empty strings"),
    ({"held_out": {"describe": ["x"]}}, "held_out must map"),
])
def test_bad_pools_are_refused_naming_the_file(tmp_path, document, message):
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=message) as refused:
        load_instruction_pool(path)
    assert str(path) in str(refused.value)


def test_held_out_phrasings_missing_is_a_clear_error(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump({"sit": ["First look, then answer.\nQuestion: {question}"]}))
    with pytest.raises(ConfigError, match="no held_out phrasings for the sit prompt"):
        load_instruction_pool(path).held_out_of("sit", str(path))


def test_the_join_draws_one_phrasing_per_record_with_the_seed(official_files):
    pool = load_instruction_pool(POOL)
    records, _ = run_join(official_files, mode="multitask", caption_policy="all", instruction_pool=str(POOL))
    plain, _ = run_join(official_files, mode="multitask", caption_policy="all")
    assert [r["target"] for r in records] == [r["target"] for r in plain]  # the targets do not change
    for record in records:
        kind, variant = record["kind"], record["instruction_variant"]
        assert record["instruction"] == pool.of(kind)[variant].format(question=record["question"])
        if kind != "describe":
            assert QUESTION_TEXT[record["question_id"]] in record["instruction"]
    used = Counter((r["kind"], r["instruction_variant"]) for r in records)
    assert len({variant for kind, variant in used if kind == "baseline"}) > 1  # phrasings are mixed
    again, _ = run_join(official_files, mode="multitask", caption_policy="all", instruction_pool=str(POOL))
    other, _ = run_join(official_files, mode="multitask", caption_policy="all", instruction_pool=str(POOL),
                        subset_seed=7)
    assert again == records
    assert [r["instruction_variant"] for r in other] != [r["instruction_variant"] for r in records]
    assert {r["instruction_variant"] for r in plain} == {-1}  # no pool: the templates' phrasing, marked
