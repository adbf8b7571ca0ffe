"""The image pipelines: "fast" reproduces "plain" (the processor's own path) from the processor's settings.

Real JPEG and PNG files (procedural photo-like content at COCO size), the real BlipImageProcessorPil and
the tiny InstructBLIP's real ViT.
"""

import pytest
import torch
from PIL import Image
from transformers import BlipImageProcessorPil

from sit_vqa.modeling.collate import SampleError, SampleTransform
from sit_vqa.config import load_config
from sit_vqa.modeling.builders_for_tests import write_photo_like_jpegs
from sit_vqa.samples.photo_like import photo_like_image
from sit_vqa.errors import ConfigError, SitVqaError
from sit_vqa.modeling.images import ImagePipelineError, image_transform, pipeline_settings
from sit_vqa.modeling.tiny import build_tiny_instructblip

# Measured on 32 photo-like 640x480 JPEGs (quality 90) at 224x224: max 0.60, mean 0.012 (normalised units;
# 1 level of 255 is ~0.015); docs/PERFORMANCE.md has the benchmark's figures.
MAX_PIXEL_DIFFERENCE = 0.7
MEAN_PIXEL_DIFFERENCE = 0.02


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return write_photo_like_jpegs(tmp_path_factory.mktemp("jpegs"), 6, seed=100)


def processor_224():
    return BlipImageProcessorPil(size={"height": 224, "width": 224})


def both(processor, path):
    plain, fast = image_transform(processor, "plain"), image_transform(processor, "fast")
    with Image.open(path) as first, Image.open(path) as second:
        return plain(first), fast(second)


def test_without_a_draft_step_fast_is_plain_up_to_float_rounding(tmp_path):
    """A PNG cannot be draft-decoded: the uint8 resize is the processor's exactly, the normalise one fused op."""
    path = tmp_path / "photo.png"
    photo_like_image(7).save(path)
    plain, fast = both(processor_224(), path)
    assert fast.dtype == torch.float32 and fast.shape == plain.shape == (3, 224, 224)
    assert (fast - plain).abs().max().item() < 1e-5


def test_settings_come_from_the_processor_not_constants(tmp_path):
    """Another size, resample, mean and std: fast follows all of them (shape and values)."""
    processor = BlipImageProcessorPil(
        size={"height": 60, "width": 100}, resample=Image.Resampling.BILINEAR,
        image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3],
    )
    path = tmp_path / "photo.png"
    photo_like_image(8, size=(250, 150)).save(path)  # under REDUCING_GAP x the target: no box-reduction step
    plain, fast = both(processor, path)
    assert fast.shape == (3, 60, 100)
    assert (fast - plain).abs().max().item() < 1e-5


def test_on_photo_like_jpegs_fast_stays_close_to_plain(jpegs):
    differences = [(fast - plain).abs() for plain, fast in (both(processor_224(), path) for path in jpegs)]
    assert max(d.max().item() for d in differences) <= MAX_PIXEL_DIFFERENCE
    assert max(d.mean().item() for d in differences) <= MEAN_PIXEL_DIFFERENCE
    # the draft step did run (a 640x480 JPEG decoded at half scale cannot match the full decode exactly)
    assert max(d.max().item() for d in differences) > 1e-3


def test_a_jpeg_already_decoded_is_not_drafted(jpegs):
    """Loaded pixels are resized from the full decode (Pillow's draft does nothing once they are loaded): the
    fast pipeline then matches plain up to float rounding, as on a PNG."""
    processor = processor_224()
    plain, fast = image_transform(processor, "plain"), image_transform(processor, "fast")
    with Image.open(jpegs[0]) as first, Image.open(jpegs[0]) as second:
        second.load()
        assert (fast(second) - plain(first)).abs().max().item() < 1e-5


@pytest.mark.parametrize("image_size", [32, 224])
def test_vit_features_of_fast_and_plain_pixels_agree(jpegs, image_size):
    """The tiny model's ViT sees almost the same image: features differ by a few percent, while the
    features of two different images differ by about 100%."""
    model, processor = build_tiny_instructblip("decoder", image_size=image_size)
    pairs = [both(processor, path) for path in jpegs]
    with torch.no_grad():
        plain = model.vision_model(pixel_values=torch.stack([p for p, _ in pairs])).last_hidden_state
        fast = model.vision_model(pixel_values=torch.stack([f for _, f in pairs])).last_hidden_state
    norms = plain.norm(dim=(1, 2))
    relative = (fast - plain).norm(dim=(1, 2)) / norms
    between_images = (plain - plain.roll(1, dims=0)).norm(dim=(1, 2)) / norms
    assert relative.max().item() < 0.06
    assert relative.max().item() < between_images.min().item() / 10


def test_unknown_pipeline_and_unsupported_settings_are_clear_errors():
    with pytest.raises(ImagePipelineError, match="unknown image_pipeline 'turbo'"):
        image_transform(processor_224(), "turbo")
    cropping = BlipImageProcessorPil(size={"height": 224, "width": 224}, do_center_crop=True, crop_size={"height": 200, "width": 200})
    with pytest.raises(ImagePipelineError, match="do_center_crop.*use image_pipeline: plain"):
        image_transform(cropping, "fast")
    shortest = BlipImageProcessorPil(size={"shortest_edge": 224}, default_to_square=False)
    with pytest.raises(SitVqaError, match="size of"):
        image_transform(shortest, "fast")


def test_pipeline_settings_name_the_pipeline_and_processor():
    plain = pipeline_settings(processor_224(), "plain")
    assert plain["image_pipeline"] == "plain"
    assert plain["image_processor"]["size"] == {"height": 224, "width": 224}
    assert pipeline_settings(processor_224(), "fast") != plain
    assert pipeline_settings(BlipImageProcessorPil(size={"height": 32, "width": 32}), "plain") != plain


def test_sample_transform_uses_the_configured_pipeline(tiny_decoder, jpegs):
    model, processor = tiny_decoder
    record = {"instruction": "what color is it?", "target": "red", "image_path": str(jpegs[0])}
    samples = {
        pipeline: SampleTransform.for_model(model, processor, image_pipeline=pipeline)(record)["pixel_values"]
        for pipeline in ("plain", "fast")
    }
    plain_expected, fast_expected = both(processor, jpegs[0])
    assert torch.equal(samples["plain"], plain_expected)
    assert torch.equal(samples["fast"], fast_expected)
    assert not torch.equal(samples["plain"], samples["fast"])


def test_a_truncated_jpeg_names_the_file(tiny_decoder, jpegs, tmp_path):
    model, processor = tiny_decoder
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpegs[0].read_bytes()[:2000])
    transform = SampleTransform.for_model(model, processor, image_pipeline="fast")
    with pytest.raises(SampleError, match="broken.jpg"):
        transform({"instruction": "what?", "target": "x", "image_path": str(broken), "question_id": 5})


def test_config_declares_image_pipeline():
    assert load_config(None, ["--tiny_model", "decoder"]).model.image_pipeline == "plain"
    assert load_config(None, ["--tiny_model", "decoder", "--image_pipeline", "fast"]).model.image_pipeline == "fast"
    with pytest.raises((ConfigError, SystemExit)):
        load_config(None, ["--tiny_model", "decoder", "--image_pipeline", "turbo"])
