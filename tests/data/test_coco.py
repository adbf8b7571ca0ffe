"""COCO captions through pycocotools: the index, caption normalisation, file names, wrong-file errors."""

import json

import pytest
from pycocotools.coco import COCO

from sit_vqa.data.coco import load_captions, normalise_caption
from sit_vqa.errors import DataError

from .conftest import CAPTIONS, image_name


def test_captions_are_indexed_by_pycocotools(official_files):
    captions = load_captions(official_files.captions)
    assert isinstance(captions.coco, COCO)
    assert sorted(captions.coco.imgToAnns) == sorted(CAPTIONS)
    assert sorted(captions.coco.imgs) == sorted(CAPTIONS)
    assert captions.captions_read == sum(len(texts) for texts in CAPTIONS.values())
    # the COCO API answers queries on the index we built
    assert len(captions.coco.getAnnIds(imgIds=[9])) == 3
    assert [a["caption"] for a in captions.coco.loadAnns(captions.coco.getAnnIds(imgIds=[25]))] == CAPTIONS[25]


def test_every_caption_is_kept_in_file_order_whitespace_normalised(official_files):
    captions = load_captions(official_files.captions)
    assert captions.by_image == {image: [" ".join(t.split()) for t in texts] for image, texts in CAPTIONS.items()}
    assert captions.by_image[9][2] == "Dinner: rice, broccoli and a fork."  # colon kept, newline/double space gone
    assert captions.by_image[25][1] == "A tall giraffe. Answer: it is near trees"
    assert captions.blank_captions == 0


def test_normalise_caption_only_touches_whitespace():
    assert normalise_caption("  A man:\n riding\ta  bike. \n") == "A man: riding a bike."
    assert normalise_caption("Q: what? A: this!") == "Q: what? A: this!"
    assert normalise_caption(" \n ") == ""


def test_blank_captions_are_counted_and_left_out(official_data, write_official):
    annotations = official_data["captions"]["annotations"]
    annotations.append({"image_id": 30, "id": 999, "caption": "  \n"})
    annotations.append({"image_id": 77, "id": 998, "caption": ""})
    captions = load_captions(write_official(official_data).captions)
    assert captions.blank_captions == 2
    assert captions.by_image[30] == ["A red bus on a street."]
    assert 77 not in captions.by_image


def test_file_name_comes_from_the_captions_file_else_the_coco_scheme(official_data, write_official):
    official_data["captions"]["images"][0]["file_name"] = "renamed.jpg"  # image 9
    del official_data["captions"]["images"][1]["file_name"]  # image 25
    captions = load_captions(write_official(official_data).captions)
    assert captions.file_name(9, "train2014") == "renamed.jpg"
    assert captions.file_name(25, "val2014") == image_name(25, "val2014") == "COCO_val2014_000000000025.jpg"
    assert captions.file_name(123456, "train2014") == "COCO_train2014_000000123456.jpg"  # not in $.images at all
    with pytest.raises(DataError, match="no file_name .* no data_subtype"):
        captions.file_name(25, None)


def test_images_list_is_optional(official_data, write_official):
    del official_data["captions"]["images"]
    captions = load_captions(write_official(official_data).captions)
    assert captions.file_name(9, "train2014") == image_name(9)
    assert len(captions.by_image) == len(CAPTIONS)


INSTANCES = {
    "images": [{"id": 9, "file_name": "x.jpg"}],
    "annotations": [{"id": 1, "image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4], "segmentation": [[1, 2, 3, 4]],
                     "area": 4.0, "iscrowd": 0}],
    "categories": [{"id": 3, "name": "car"}],
}
KEYPOINTS = {**INSTANCES, "annotations": [{**INSTANCES["annotations"][0], "keypoints": [0] * 51}]}


@pytest.mark.parametrize(("content", "kind"), [
    (INSTANCES, "COCO instances file"),
    (KEYPOINTS, "COCO person_keypoints file"),
])
def test_a_coco_file_of_another_kind_is_named(tmp_path, content, kind):
    path = tmp_path / "instances_train2014.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError) as error:
        load_captions(path)
    message = str(error.value)
    assert str(path) in message and kind in message and "captions_<split>.json" in message


def test_a_vqa_file_passed_as_captions_is_named(official_files):
    with pytest.raises(DataError, match="this is a VQAv2 annotations file"):
        load_captions(official_files.annotations)
    with pytest.raises(DataError, match="this is a VQAv2 questions file"):
        load_captions(official_files.questions)


def test_bad_caption_record_is_named(official_data, write_official):
    official_data["captions"]["annotations"][4]["caption"] = 42
    files = write_official(official_data)
    with pytest.raises(DataError) as error:
        load_captions(files.captions)
    message = str(error.value)
    assert str(files.captions) in message and "$.annotations[4].caption" in message
    assert '"caption": 42' in message


def test_malformed_and_empty_and_missing(tmp_path):
    broken = tmp_path / "captions_train2014.json"
    broken.write_text('{"images": [], "annotations": [\n\n{"id": 1 "image_id": 2, "caption": "x"}]}')
    with pytest.raises(DataError, match=r"not valid JSON at line 3, column 10"):
        load_captions(broken)
    broken.write_text('{"images": [], "annotations": [{"id": 1, "image_id": 2, "capt')
    with pytest.raises(DataError, match=r"not valid JSON: Input data was truncated"):
        load_captions(broken)
    empty = tmp_path / "empty.json"
    empty.write_text('{"images": [], "annotations": []}')
    with pytest.raises(DataError, match="has no annotations"):
        load_captions(empty)
    with pytest.raises(DataError, match="COCO captions file .* not found"):
        load_captions(tmp_path / "missing.json")


@pytest.mark.parametrize(("content", "message"), [
    (b'{"images": [], "annotations": [{"id": 1, "image_id": 1, "caption": "caf\xe9"}]}', r"not UTF-8 text at byte 71 \(line 1\)"),
    (b'\xef\xbb\xbf{"images": [], "annotations": []}', "byte-order mark"),
])
def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "captions_train2014.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        load_captions(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("key", ["annotations", "images"])
def test_repeated_caption_or_image_ids_are_an_error(tmp_path, key):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [{"id": 10, "image_id": 1, "caption": "A cat."}, {"id": 11, "image_id": 2, "caption": "A dog."}],
    }
    data[key][1]["id"] = data[key][0]["id"]
    path = tmp_path / "captions_train2014.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"duplicate id\(s\) in \$\.{key}: id \d+ at \$\.{key}\[0\], \$\.{key}\[1\]"):
        load_captions(path)
