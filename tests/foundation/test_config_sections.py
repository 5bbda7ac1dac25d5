"""``[segmentation]`` is the segmenter's section; the seed's ``[training]`` is still read as it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from oringscan.config import Config, config_to_toml, load_config
from oringscan.errors import ConfigError


def test_training_section_is_read_as_segmentation_with_a_note(tmp_path: Path, caplog) -> None:
    path = tmp_path / "seed.toml"
    path.write_text("[training]\nepochs = 7\nlr = 0.01\n\n[segmentation]\nmin_ap50 = 0.4\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="oringscan.config"):
        config = load_config(path)
    assert config.segmentation.epochs == 7 and config.segmentation.lr == 0.01
    assert config.segmentation.min_ap50 == 0.4
    assert config.training is config.segmentation  # the seed's name, the same object
    assert "[training] is read as [segmentation]" in caplog.text and str(path) in caplog.text
    # What is printed and saved uses the new name only.
    text = config_to_toml(config)
    assert "[segmentation]" in text and "[training]" not in text


def test_a_key_in_both_sections_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "both.toml"
    path.write_text("[training]\nepochs = 7\n\n[segmentation]\nepochs = 9\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"both\.toml: \[training\] and \[segmentation\] both set epochs"):
        load_config(path)


def test_configs_saved_before_the_rename_still_load() -> None:
    """A checkpoint made before the rename stores the config with a "training" table."""
    old = Config().model_dump()
    old["training"] = {k: v for k, v in old.pop("segmentation").items() if k not in ("min_ap50",)}
    old["training"]["epochs"] = 3
    old["segmentation"] = {"min_ap50": 0.25}
    config = Config.model_validate(old)
    assert config.segmentation.epochs == 3 and config.segmentation.min_ap50 == 0.25


def test_model_copy_with_the_old_name_updates_segmentation() -> None:
    config = Config()
    faster = config.model_copy(update={"training": config.training.model_copy(update={"epochs": 2})})
    assert faster.segmentation.epochs == 2 and config.segmentation.epochs != 2


def test_a_label_named_like_a_class_is_that_class() -> None:
    from oringscan.config import ClassesConfig

    classes = ClassesConfig(names=["defect", "hole"], label_map={"pit": "hole"})
    assert classes.class_for("Hole ") == "hole"  # its own name: no map entry needed
    assert classes.class_for("pit") == "hole" and classes.class_for("scratch") == "defect"
