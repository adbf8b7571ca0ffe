"""The training data: records from the config (image or text-only), turned into the Trainer's dataset."""

from __future__ import annotations

import logging
from pathlib import Path

from sit_vqa.config import DataArguments, RunConfig
from sit_vqa.data.prepared import load_prepared, prepare_cached
from sit_vqa.data.text_sit import build_text_sit, load_alpaca
from sit_vqa.errors import ConfigError
from sit_vqa.modeling.collate import TransformedDataset
from sit_vqa.modeling.families import model_family
from sit_vqa.modeling.feature_cache import build_feature_cache, record_image_paths, use_cached_features
from sit_vqa.training.unreadable import SkipUnreadableImages

logger = logging.getLogger(__name__)


def load_training_records(data: DataArguments, model_type: str):
    """The training records (with 'instruction' and 'target'), and a report of how they were made."""
    if not model_family(model_type).answers_images:  # the text path: Alpaca-format records
        if not data.text_data:
            raise ConfigError("causal_lm training needs text_data (an Alpaca-format JSON file)")
        translated = load_alpaca(data.text_data_translated) if data.text_data_translated else None
        records = build_text_sit(
            load_alpaca(data.text_data), data.text_mode, translated=translated,
            sources=(data.text_data, data.text_data_translated or "translated records"),
        )
        return records, {"text_data": data.text_data, "text_mode": data.text_mode, "records": len(records)}
    if data.train_dataset_dir:
        dataset, report = load_prepared(data.train_dataset_dir)
    else:
        raw = data.raw_files("train")
        if raw is None:
            raise ConfigError("no training data: set train_dataset_dir or train_questions/annotations/captions/image_dir")
        dataset, report = prepare_cached(
            raw["questions"], raw["annotations"], raw["captions"], raw["image_dir"],
            cache_root=data.prepared_cache_dir, options=data.join_options(),
        )
    return dataset, report.to_dict()


def training_dataset(config: RunConfig, model, processor, records, unreadable_log: Path | None):
    """(the Trainer's dataset, its SampleTransform): each record transformed when the DataLoader reads it,
    records whose image cannot be read skipped and named in `unreadable_log`."""
    transform = model_family(config.model.model_type).sample_transform(
        model, processor,
        max_instruction_length=config.model.max_instruction_length,
        max_target_length=config.model.max_target_length,
        image_pipeline=config.model.image_pipeline,
        feature_cache=_feature_cache(config, model, processor, records),
    )
    transform.check_records(records)
    dataset = SkipUnreadableImages(TransformedDataset(records, transform), unreadable_log)
    logger.info("training on %d records from %s", len(dataset), config.source)
    return dataset, transform


def _feature_cache(config: RunConfig, model, processor, records):
    """The frozen-ViT feature cache of the training images (None when feature_cache_dir is unset), built where
    images are missing; the model then takes cached states as pixel_values (and still encodes images)."""
    if not config.data.feature_cache_dir:
        return None
    with config.training.main_process_first(desc="frozen-ViT feature cache"):  # one process builds
        cache = build_feature_cache(
            config.data.feature_cache_dir, model, processor, record_image_paths(records),
            pipeline=config.model.image_pipeline, device=config.training.device,
        )
    use_cached_features(model)
    return cache
