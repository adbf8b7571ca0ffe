"""The frozen-ViT feature cache: same loss as the ViT itself, stale and partial caches refused, resumable builds.

Real JPEG files, the real InstructBLIP classes (tiny sizes, both LM kinds), real .npy memory maps.
Each test builds its own model: use_cached_features replaces the model's vision_model.
"""

import json
import os

import pytest
import torch

from sit_vqa.modeling.collate import SampleError, SampleTransform, TransformedDataset
from sit_vqa.config import load_config
from sit_vqa.modeling.builders_for_tests import write_photo_like_jpegs
from sit_vqa.samples.photo_like import photo_like_jpeg
from sit_vqa.errors import ConfigError
from sit_vqa.modeling.generation import GenerationSettings, generate_texts
from sit_vqa.modeling.feature_cache import (
    CachedVisionEncoder,
    FeatureCache,
    FeatureCacheError,
    build_feature_cache,
    record_image_paths,
    use_cached_features,
)
from sit_vqa.modeling.loading import configure_trainable
from sit_vqa.modeling.tiny import build_tiny_instructblip

SIZE = (160, 120)  # small JPEGs keep the tests fast; the draft/resize path is the same as at COCO size


@pytest.fixture
def images(tmp_path):
    return write_photo_like_jpegs(tmp_path / "images", 3, seed=10, size=SIZE)


def records_of(images):
    """Four questions over three images (two on the first), as the VQAv2 join gives them."""
    questions = ["what color is the circle?", "how many shapes are there?", "is there a square?", "what is it?"]
    targets = ["description: a red circle.\nanswer: red", "answer: two", "answer: yes", "answer: a star"]
    paths = [images[0], images[0], images[1], images[2]]
    return [{"instruction": q, "target": t, "image_path": str(p), "question_id": i}
            for i, (q, t, p) in enumerate(zip(questions, targets, paths))]


def tiny_model(lm_kind="decoder", **options):
    """The tiny InstructBLIP with a post_layernorm that is not the identity (as a trained ln_vision is), so
    that applying it once or twice, or not at all, shows in the loss."""
    model, processor = build_tiny_instructblip(lm_kind, **options)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(5)
        model.vision_model.post_layernorm.weight.uniform_(0.5, 1.5)
        model.vision_model.post_layernorm.bias.normal_(0.0, 0.3)
    return model, processor


def loss_of(model, processor, records, feature_cache=None):
    transform = SampleTransform.for_model(model, processor, feature_cache=feature_cache)
    batch = transform.collator()([transform(record) for record in records])
    return model(**batch).loss, batch


@pytest.mark.parametrize("lm_kind", ["decoder", "t5"])
def test_cached_features_give_the_same_loss(lm_kind, images, tmp_path):
    model, processor = tiny_model(lm_kind)
    records = records_of(images)
    with torch.no_grad():
        reference, _ = loss_of(model, processor, records)
    fp32 = build_feature_cache(tmp_path / "fp32", model, processor, record_image_paths(records), dtype="float32",
                               progress=False)
    bf16 = build_feature_cache(tmp_path / "bf16", model, processor, record_image_paths(records), progress=False)
    use_cached_features(model)
    with torch.no_grad():
        exact, batch = loss_of(model, processor, records, fp32)
        rounded, _ = loss_of(model, processor, records, bf16)
    assert batch["pixel_values"].shape[1:] == (17, 32)  # cached states (16 patches + CLS, hidden 32), not images
    assert torch.allclose(exact, reference, rtol=0, atol=1e-6), (exact, reference)
    assert torch.allclose(rounded, reference, rtol=1e-2), (rounded, reference)
    assert not torch.equal(rounded, reference)  # bf16 storage does round


def test_trained_post_layernorm_gets_the_same_gradient_from_cached_states(images, tmp_path):
    """The cache holds the states before post_layernorm, so train_vision_post_layernorm keeps working."""
    records = records_of(images)
    gradients = []
    for cached in (False, True):
        model, processor = tiny_model()
        configure_trainable(model, train_vision_post_layernorm=True, quiet=True)
        cache = None
        if cached:
            cache = build_feature_cache(tmp_path / "c", model, processor, record_image_paths(records),
                                        dtype="float32", progress=False)
            use_cached_features(model)
        loss, _ = loss_of(model, processor, records, cache)
        loss.backward()
        gradients.append(model.vision_model.post_layernorm.weight.grad.clone())
    assert gradients[0].abs().sum() > 0
    assert torch.allclose(gradients[0], gradients[1], atol=1e-6)


def test_the_wrapper_still_encodes_images_exactly(images):
    """Evaluation during training passes images; the wrapper must be the ViT itself for them."""
    model, processor = build_tiny_instructblip("decoder")
    pixels = SampleTransform.for_model(model, processor)(records_of(images)[0])["pixel_values"][None]
    with torch.no_grad():
        original = model.vision_model(pixel_values=pixels)
        wrapped = CachedVisionEncoder(model.vision_model)(pixel_values=pixels)
    assert torch.equal(original.last_hidden_state, wrapped.last_hidden_state)
    assert torch.equal(original.pooler_output, wrapped.pooler_output)
    names_before = [name for name, _ in model.named_parameters()]
    use_cached_features(model)
    assert [name for name, _ in model.named_parameters()] == names_before  # checkpoints load unchanged


def test_generation_from_cached_features_matches(images, tmp_path):
    model, processor = build_tiny_instructblip("decoder")
    records = records_of(images)
    settings = GenerationSettings(batch_size=4, max_new_tokens=8)
    reference = generate_texts(model, processor, records, settings, progress=False)
    cache = build_feature_cache(tmp_path / "c", model, processor, record_image_paths(records), dtype="float32",
                                progress=False)
    use_cached_features(model)
    assert generate_texts(model, processor, records, settings, progress=False, feature_cache=cache) == reference


def test_other_vit_weights_or_preprocessing_are_refused(images, tmp_path):
    model, processor = build_tiny_instructblip("decoder", seed=0)
    paths = [str(p) for p in images]
    build_feature_cache(tmp_path / "c", model, processor, paths, progress=False)
    other_vit, _ = build_tiny_instructblip("decoder", seed=1)
    with pytest.raises(FeatureCacheError, match=r"vision_weights_sha256 differ.*delete it"):
        build_feature_cache(tmp_path / "c", other_vit, processor, paths, progress=False)
    with pytest.raises(FeatureCacheError, match="image_pipeline differ"):
        build_feature_cache(tmp_path / "c", model, processor, paths, pipeline="fast", progress=False)
    _, bigger_images = build_tiny_instructblip("decoder", image_size=64)
    with pytest.raises(FeatureCacheError, match="image_processor"):
        build_feature_cache(tmp_path / "c", model, bigger_images, paths, progress=False)
    # the stale cache was left as it was, and still opens for the settings it was built with
    assert len(FeatureCache(tmp_path / "c")) == 3


def test_a_changed_image_is_refused_then_rebuilt(images, tmp_path):
    model, processor = build_tiny_instructblip("decoder")
    paths = [str(p) for p in images]
    cache = build_feature_cache(tmp_path / "c", model, processor, paths, dtype="float32", progress=False)
    before = cache.features(paths[1])
    images[1].write_bytes(photo_like_jpeg(999, SIZE))
    stat = os.stat(images[1])
    os.utime(images[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime, whatever the clock
    with pytest.raises(FeatureCacheError, match=rf"{images[1].name} changed after the feature cache"):
        cache.features(paths[1])
    rebuilt = build_feature_cache(tmp_path / "c", model, processor, paths, dtype="float32", progress=False)
    after = rebuilt.features(paths[1])
    pixels = SampleTransform.for_model(model, processor)({"instruction": "x", "image_path": paths[1]}, with_target=False)
    with torch.no_grad():
        expected = model.vision_model.encoder(inputs_embeds=model.vision_model.embeddings(pixels["pixel_values"][None]))
    assert not torch.equal(after, before)
    assert torch.allclose(after, expected.last_hidden_state[0], atol=1e-6)


def test_a_cut_off_build_is_detected_and_resumed(images, tmp_path):
    model, processor = build_tiny_instructblip("decoder")
    paths = [str(p) for p in images]
    directory = tmp_path / "c"
    build_feature_cache(directory, model, processor, paths, shard_size=1, progress=False)
    # as if the build had died writing the last shard: its .npy is there, its .json (written last) is not
    (directory / "shard-00002.json").unlink()
    partial = FeatureCache(directory)
    assert partial.missing(paths) == [os.path.abspath(paths[2])]
    with pytest.raises(FeatureCacheError, match=rf"{images[2].name} is not in the feature cache"):
        partial.features(paths[2])
    resumed = build_feature_cache(directory, model, processor, paths, shard_size=1, progress=False)
    assert resumed.missing(paths) == []
    assert sorted(p.name for p in directory.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00001.npy",
                                                                     "shard-00002.npy"]
    assert json.loads((directory / "shard-00002.json").read_text())["images"][0]["path"] == os.path.abspath(paths[2])


def test_dataloader_workers_read_the_cache(images, tmp_path):
    model, processor = build_tiny_instructblip("decoder")
    records = records_of(images)
    cache = build_feature_cache(tmp_path / "c", model, processor, record_image_paths(records), progress=False)
    transform = SampleTransform.for_model(model, processor, feature_cache=cache)
    cache.features(records[0]["image_path"])  # opens a memory map in this process; workers must not copy it
    loader = torch.utils.data.DataLoader(TransformedDataset(records, transform), batch_size=2,
                                         collate_fn=transform.collator(), num_workers=1)
    batches = list(loader)
    assert torch.equal(batches[0]["pixel_values"][0], cache.features(records[0]["image_path"]))


def test_in_memory_images_and_a_missing_cache_are_clear_errors(images, tmp_path, red_image):
    model, processor = build_tiny_instructblip("decoder")
    cache = build_feature_cache(tmp_path / "c", model, processor, [str(images[0])], progress=False)
    transform = SampleTransform.for_model(model, processor, feature_cache=cache)
    with pytest.raises(SampleError, match="in-memory image"):
        transform({"instruction": "what?", "target": "x", "image": red_image, "question_id": 3})
    with pytest.raises(FeatureCacheError, match="not a feature cache"):
        FeatureCache(tmp_path / "nowhere")


def test_config_refuses_a_feature_cache_with_a_training_vit(tmp_path):
    with pytest.raises(ConfigError, match="train_all"):
        load_config(None, ["--tiny_model", "decoder", "--train_all", "true", "--feature_cache_dir", str(tmp_path)])
    config = load_config(None, ["--tiny_model", "decoder", "--feature_cache_dir", str(tmp_path)])
    assert config.data.feature_cache_dir == str(tmp_path)


def test_training_with_feature_cache_dir_builds_and_uses_it(tmp_path, monkeypatch):
    from transformers import TrainerCallback

    from sit_vqa.modeling.checkpoint import load_checkpoint
    from sit_vqa.training.run import run_training
    from tests.training.test_training import REPO, logged_losses, quick_config

    class RecordInputs(TrainerCallback):
        """What the Trainer really feeds the model: the first batch's pixel_values and the vision module."""

        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
            self.pixel_shape = tuple(next(iter(train_dataloader))["pixel_values"].shape)
            self.vision_module = type(model.vision_model)

    monkeypatch.chdir(REPO)
    plain = quick_config(tmp_path / "plain", "--max_steps", "2")
    run_training(plain)
    cached = quick_config(tmp_path / "cached", "--max_steps", "2", "--feature_cache_dir", str(tmp_path / "vit"))
    recorded = RecordInputs()
    final = run_training(cached, callbacks=[recorded])

    cache = FeatureCache(tmp_path / "vit")
    assert 0 < len(cache) <= 24  # the images of the 24 training questions
    assert recorded.vision_module is CachedVisionEncoder
    assert recorded.pixel_shape == (4, 17, 32)  # cached encoder states, not (4, 3, 32, 32) images
    first_plain, first_cached = logged_losses(tmp_path / "plain" / "run")[1], logged_losses(tmp_path / "cached" / "run")[1]
    assert first_cached == pytest.approx(first_plain, rel=1e-2)  # bf16-rounded features, same batch
    model, _, manifest = load_checkpoint(final)  # a normal model again: the cache is a training-time detail
    assert not isinstance(model.vision_model, CachedVisionEncoder)
    assert manifest.config["feature_cache_dir"] == str(tmp_path / "vit")
