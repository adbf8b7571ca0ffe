"""SampleTransform + SitCollator on the tiny models' real tokenizers and image processor.

Expected ids are spelled out word by word from the tiny vocabularies, so a wrong mask, a missing
BOS/EOS or a leaked target token shows up as a readable list difference.
"""

import pytest
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from sit_vqa.modeling.collate import (
    IGNORE_INDEX,
    SampleError,
    SampleTransform,
    SitCollator,
    TransformedDataset,
)
from sit_vqa.modeling.tiny import build_tiny_instructblip

INSTRUCTION = "What color is the circle?"
INSTRUCTION_WORDS = ["what", "color", "is", "the", "circle", "?"]
TARGET = "Description: a red circle.\nAnswer: red"
TARGET_WORDS = ["description", ":", "a", "red", "circle", ".", "\n", "answer", ":", "red"]


def ids(tokenizer, words):
    vocab = tokenizer.get_vocab()
    return [vocab[word] for word in words]


def byte_ids(tokenizer, text):
    """Byte-level ids of ASCII text: each character is its own token, the space is 'Ġ'."""
    vocab = tokenizer.get_vocab()
    return [vocab["Ġ" if char == " " else char] for char in text]


@pytest.fixture
def record(red_image):
    return {"question_id": 7, "instruction": INSTRUCTION, "target": TARGET, "image": red_image}


# ------------------------------------------------------------------------------------ label masks


def test_decoder_only_sample_layout_and_labels_token_by_token(tiny_decoder, record):
    model, processor = tiny_decoder
    tokenizer = processor.tokenizer
    sample = SampleTransform.for_model(model, processor)(record)

    image = [model.config.image_token_index] * model.config.num_query_tokens
    assert image == [4, 4, 4, 4]  # <image> is id 4, num_query_tokens 4
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    instruction, target = ids(tokenizer, INSTRUCTION_WORDS), ids(tokenizer, TARGET_WORDS)

    assert sample["input_ids"] == image + [bos] + instruction + target + [eos]
    assert sample["labels"] == [IGNORE_INDEX] * (4 + 1 + 6) + target + [eos]
    assert sample["attention_mask"] == [1] * (4 + 1 + 6 + 10 + 1)
    assert sample["pixel_values"].shape == (3, 32, 32)


def test_t5_sample_layout_and_labels_token_by_token(tiny_t5, record):
    model, processor = tiny_t5
    tokenizer = processor.tokenizer
    sample = SampleTransform.for_model(model, processor)(record)

    image = [model.config.image_token_index] * model.config.num_query_tokens
    eos = tokenizer.eos_token_id
    instruction, target = ids(tokenizer, INSTRUCTION_WORDS), ids(tokenizer, TARGET_WORDS)

    assert tokenizer.bos_token_id is None  # T5 has no BOS: the encoder input ends with EOS instead
    assert sample["input_ids"] == image + instruction + [eos]
    assert sample["attention_mask"] == [1] * (4 + 6 + 1)
    assert sample["labels"] == target + [eos]  # decoder labels: the target only, nothing masked


def test_qformer_gets_the_instruction_only(tiny_instructblip, record):
    _, model, processor = tiny_instructblip
    qformer_tokenizer = processor.qformer_tokenizer
    transform = SampleTransform.for_model(model, processor)
    sample = transform(record)

    cls, sep = qformer_tokenizer.cls_token_id, qformer_tokenizer.sep_token_id
    assert sample["qformer_input_ids"] == [cls] + ids(qformer_tokenizer, INSTRUCTION_WORDS) + [sep]
    assert sample["qformer_attention_mask"] == [1] * 8
    target_only = set(ids(qformer_tokenizer, ["description", "answer", "red", "a", ":", "."]))
    assert not target_only & set(sample["qformer_input_ids"])
    # the same Q-Former input whatever the target, and at generation time
    other = transform({**record, "target": "Description: two blue squares.\nAnswer: blue"})
    assert other["qformer_input_ids"] == sample["qformer_input_ids"]
    assert transform(record, with_target=False)["qformer_input_ids"] == sample["qformer_input_ids"]


def test_generation_sample_is_the_prompt_without_labels(tiny_instructblip, record):
    kind, model, processor = tiny_instructblip
    transform = SampleTransform.for_model(model, processor)
    prompt = transform(record, with_target=False)
    full = transform(record)

    assert "labels" not in prompt
    if kind == "decoder":
        assert full["input_ids"][: len(prompt["input_ids"])] == prompt["input_ids"]
        assert full["labels"].count(IGNORE_INDEX) == len(prompt["input_ids"])
    else:
        assert prompt["input_ids"] == full["input_ids"]


# ------------------------------------------------------------------------------------ image tokens


@pytest.mark.parametrize("num_query_tokens", [1, 6])
def test_exactly_num_query_tokens_image_tokens(num_query_tokens, record):
    model, processor = build_tiny_instructblip("decoder", num_query_tokens=num_query_tokens)
    sample = SampleTransform.for_model(model, processor)(record)
    image_id = model.config.image_token_index
    assert sample["input_ids"].count(image_id) == num_query_tokens
    assert sample["input_ids"][:num_query_tokens] == [image_id] * num_query_tokens


def test_image_token_text_in_the_instruction_is_refused(tiny_decoder, record):
    model, processor = tiny_decoder
    transform = SampleTransform.for_model(model, processor)
    with pytest.raises(SampleError, match=r"question_id=7: 5 image tokens in the LM input, expected 4"):
        transform({**record, "instruction": "<image> What color is the circle?"})


# ------------------------------------------------------------------------------------ truncation


def test_instruction_truncated_from_the_left_target_from_the_right(tiny_instructblip, record):
    kind, model, processor = tiny_instructblip
    tokenizer, qformer_tokenizer = processor.tokenizer, processor.qformer_tokenizer
    transform = SampleTransform.for_model(model, processor, max_instruction_length=5, max_target_length=4)
    sample = transform(record)

    image = [model.config.image_token_index] * 4
    eos = tokenizer.eos_token_id
    kept_instruction = ids(tokenizer, ["is", "the", "circle", "?"])  # the question's end survives
    kept_target = ids(tokenizer, ["description", ":", "a"]) + [eos]  # EOS always stays
    if kind == "decoder":
        assert sample["input_ids"] == image + [tokenizer.bos_token_id] + kept_instruction + kept_target
        assert sample["labels"] == [IGNORE_INDEX] * 9 + kept_target
    else:
        assert sample["input_ids"] == image + kept_instruction + [eos]
        assert sample["labels"] == kept_target
    cls, sep = qformer_tokenizer.cls_token_id, qformer_tokenizer.sep_token_id
    assert sample["qformer_input_ids"] == [cls] + ids(qformer_tokenizer, ["the", "circle", "?"]) + [sep]
    # the processor's own tokenizers keep their settings
    assert tokenizer.truncation_side == "right" and qformer_tokenizer.truncation_side == "right"


# ------------------------------------------------------------------------------------ padding


def test_right_padding_for_training(tiny_decoder, record, blue_image):
    model, processor = tiny_decoder
    transform = SampleTransform.for_model(model, processor)
    long, short = transform(record), transform({"instruction": "Is there a star?", "target": "no", "image": blue_image})
    batch = transform.collator()([long, short])

    width = len(long["input_ids"])
    pad = width - len(short["input_ids"])
    assert batch["input_ids"][1].tolist() == short["input_ids"] + [processor.tokenizer.pad_token_id] * pad
    assert batch["attention_mask"][1].tolist() == [1] * len(short["input_ids"]) + [0] * pad
    assert batch["labels"][1].tolist() == short["labels"] + [IGNORE_INDEX] * pad
    assert batch["input_ids"][0].tolist() == long["input_ids"]
    qformer_pad = len(long["qformer_input_ids"]) - len(short["qformer_input_ids"])
    assert batch["qformer_input_ids"][1].tolist() == short["qformer_input_ids"] + [0] * qformer_pad
    assert batch["qformer_attention_mask"][1].tolist() == [1] * len(short["qformer_input_ids"]) + [0] * qformer_pad
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert {key: value.dtype for key, value in batch.items() if key != "pixel_values"} == dict.fromkeys(
        ["attention_mask", "input_ids", "labels", "qformer_attention_mask", "qformer_input_ids"], torch.long
    )


def test_left_padding_for_generation(tiny_decoder, record, blue_image):
    model, processor = tiny_decoder
    transform = SampleTransform.for_model(model, processor)
    long = transform(record, with_target=False)
    short = transform({"instruction": "Is there a star?", "image": blue_image}, with_target=False)
    batch = transform.collator("left")([long, short])

    pad = len(long["input_ids"]) - len(short["input_ids"])
    assert batch["input_ids"][1].tolist() == [processor.tokenizer.pad_token_id] * pad + short["input_ids"]
    assert batch["attention_mask"][1].tolist() == [0] * pad + [1] * len(short["input_ids"])
    assert "labels" not in batch
    # the Q-Former side still pads on the right
    assert batch["qformer_attention_mask"][1].tolist()[-1] == 0


def test_t5_labels_pad_to_their_own_length(tiny_t5, record, blue_image):
    model, processor = tiny_t5
    transform = SampleTransform.for_model(model, processor)
    short_target = transform(
        {"instruction": "Is there a star on the left of the image?", "target": "no", "image": blue_image}
    )
    batch = transform.collator()([transform(record), short_target])
    assert batch["labels"].shape == (2, 11)  # the longest target + EOS, not the encoder length
    assert batch["labels"][1].tolist() == short_target["labels"] + [IGNORE_INDEX] * 9
    assert batch["input_ids"].shape[1] == len(short_target["input_ids"])


def test_collator_rejects_mixed_image_and_text_only_samples(tiny_decoder, record):
    model, processor = tiny_decoder
    transform = SampleTransform.for_model(model, processor)
    text_only = transform({"instruction": "Is there a star?", "target": "no"})
    with pytest.raises(SampleError, match="image and text-only samples cannot share a batch"):
        transform.collator()([transform(record), text_only])


def test_collator_rejects_bad_padding_side():
    with pytest.raises(ValueError, match="padding_side"):
        SitCollator(pad_token_id=0, padding_side="middle")


# ------------------------------------------------------------------------------------ text-only


def test_text_only_sample_with_a_plain_tokenizer(tiny_causal_lm):
    model, tokenizer = tiny_causal_lm
    transform = SampleTransform.for_model(model, tokenizer)
    sample = transform({"instruction": "Name a color.", "target": "Red", "source_index": 0})

    prompt = [tokenizer.bos_token_id] + byte_ids(tokenizer, "Name a color.")
    target = byte_ids(tokenizer, "Red") + [tokenizer.eos_token_id]
    assert sample == {
        "input_ids": prompt + target,
        "attention_mask": [1] * (len(prompt) + len(target)),
        "labels": [IGNORE_INDEX] * len(prompt) + target,
    }


def test_text_only_record_through_the_instructblip_transform_has_no_image_keys(tiny_decoder):
    model, processor = tiny_decoder
    sample = SampleTransform.for_model(model, processor)({"instruction": "Is there a star?", "target": "no"})
    assert set(sample) == {"input_ids", "attention_mask", "labels"}
    assert model.config.image_token_index not in sample["input_ids"]


def test_text_only_batch_trains_the_causal_lm(tiny_causal_lm):
    model, tokenizer = tiny_causal_lm
    transform = SampleTransform.for_model(model, tokenizer)
    records = [{"instruction": "Name a color.", "target": "Red"}, {"instruction": "Say hi.", "target": "Hi there"}]
    batch = transform.collator()([transform(r) for r in records])
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------ records and errors


def test_image_path_is_loaded_lazily_and_resolved_against_image_dir(tiny_decoder, record, red_image, tmp_path):
    model, processor = tiny_decoder
    red_image.save(tmp_path / "red.png")
    transform = SampleTransform.for_model(model, processor, image_dir=tmp_path)
    from_path = transform({**{k: v for k, v in record.items() if k != "image"}, "image_path": "red.png"})
    from_image = transform(record)
    assert torch.equal(from_path["pixel_values"], from_image["pixel_values"])
    assert from_path["input_ids"] == from_image["input_ids"]


def test_grayscale_image_is_converted_to_rgb(tiny_decoder, record):
    model, processor = tiny_decoder
    sample = SampleTransform.for_model(model, processor)({**record, "image": record["image"].convert("L")})
    assert sample["pixel_values"].shape == (3, 32, 32)


def test_missing_image_file_names_the_path_and_the_record(tiny_decoder, record, tmp_path):
    model, processor = tiny_decoder
    transform = SampleTransform.for_model(model, processor)
    missing = tmp_path / "COCO_train2014_000000000001.jpg"
    with pytest.raises(SampleError, match=rf"cannot read image {missing} of record question_id=7"):
        transform({"question_id": 7, "instruction": INSTRUCTION, "target": TARGET, "image_path": str(missing)})


def test_corrupt_image_file_names_the_path_and_the_record(tiny_decoder, tmp_path):
    model, processor = tiny_decoder
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(SampleError, match=r"broken.jpg of record question_id=9"):
        SampleTransform.for_model(model, processor)(
            {"question_id": 9, "instruction": INSTRUCTION, "target": TARGET, "image_path": str(corrupt)}
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instruction": None}, r"question_id=7 needs a text field 'instruction'"),
        ({"target": "  "}, r"question_id=7 has an empty target"),
        ({"target": None}, r"question_id=7 needs a text field 'target'"),
        ({"image": "red.png"}, r"question_id=7: 'image' must be a PIL image"),
    ],
)
def test_bad_records_get_clear_errors(tiny_decoder, record, change, message):
    model, processor = tiny_decoder
    with pytest.raises(SampleError, match=message):
        SampleTransform.for_model(model, processor)({**record, **change})


def test_image_record_with_a_text_only_transform_is_refused(tiny_causal_lm, record):
    model, tokenizer = tiny_causal_lm
    with pytest.raises(SampleError, match="question_id=7 has an image but this transform is text-only"):
        SampleTransform.for_model(model, tokenizer)(record)


def test_image_transform_needs_all_image_parts(tiny_decoder):
    _, processor = tiny_decoder
    with pytest.raises(ValueError, match="image samples need qformer_tokenizer, image_token_id"):
        SampleTransform(tokenizer=processor.tokenizer, image_processor=processor.image_processor, num_query_tokens=4)


# ------------------------------------------------------------------------------------ with datasets / the model


def test_transformed_dataset_with_datasets_and_a_dataloader(tiny_decoder, red_image, blue_image, tmp_path):
    model, processor = tiny_decoder
    red_image.save(tmp_path / "red.png")
    blue_image.save(tmp_path / "blue.png")
    records = [
        {"question_id": 1, "instruction": INSTRUCTION, "target": TARGET, "image_path": "red.png"},
        {"question_id": 2, "instruction": "Is there a star?", "target": "no", "image_path": "blue.png"},
    ]
    transform = SampleTransform.for_model(model, processor, image_dir=tmp_path)
    dataset = TransformedDataset(Dataset.from_list(records), transform)  # what training uses

    assert dataset[0]["input_ids"] == transform(records[0])["input_ids"]
    # a spawned worker pickles the dataset with its transform: the portable worst case
    loader = DataLoader(
        dataset, batch_size=2, collate_fn=transform.collator(), num_workers=1, multiprocessing_context="spawn"
    )
    loaded = next(iter(loader))
    direct = transform.collator()([transform(r) for r in records])
    assert loaded.keys() == direct.keys()
    assert all(torch.equal(loaded[key], direct[key]) for key in direct)


def test_collated_batch_gives_a_finite_loss_that_depends_on_the_image(tiny_instructblip, record, blue_image):
    _, model, processor = tiny_instructblip
    transform = SampleTransform.for_model(model, processor)
    collate = transform.collator()
    second = {"instruction": "How many shapes are there?", "target": "Description: a red circle.\nAnswer: one"}
    red_batch = collate([transform(record), transform({**second, "image": record["image"]})])
    blue_batch = collate([transform({**record, "image": blue_image}), transform({**second, "image": blue_image})])
    with torch.no_grad():
        red, blue = model(**red_batch).loss, model(**blue_batch).loss
    assert torch.isfinite(red) and torch.isfinite(blue)
    assert abs(red.item() - blue.item()) > 1e-6  # the image reaches the loss
