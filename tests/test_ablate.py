"""The ablation harness: variants over seeds on the validation split, table files, CLI."""
from __future__ import annotations

import json

import pytest

from cagnet.ablate import (VARIANTS, Variant, format_ablation_markdown, load_ablation, run_ablation,
                           select_variants, summarise)
from cagnet.config import load_train_config
from cagnet.errors import ConfigError

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TINY = ["schedules.step1.iterations=2", "schedules.mixed.iterations=4", "schedules.mixed.interval_step1=2",
        "schedules.mixed.interval_step2=2"]


def test_the_standard_variants_cover_what_the_recipe_choice_needs():
    names = {v.name for v in VARIANTS}
    assert {"CaGNet", "CaGNet scratch", "CaGNet KL 100", "CaGNet h raw", "CaGNet SGD", "CaGNet step-2 rates",
            "CaGNet interval 10", "CaGNet reference", "CaGNet no dropout", "CaGNet unseen 30",
            "CaGNet+ST top_p 2"} <= names
    assert {"SPNet", "SPNet-c", "ZS3Net", "ZS3Net+ST", "CaGNet+ST"} <= {v.method for v in VARIANTS}
    # every row changes the recipe (the base row aside), and no two rows are the same recipe
    recipes = [tuple(sorted(v.overrides)) for v in VARIANTS]
    assert len({(v.method, r) for v, r in zip(VARIANTS, recipes)}) == len(VARIANTS)
    assert len(names) == len(VARIANTS)
    # every override is a valid key of the tutorial config
    for variant in VARIANTS:
        load_train_config("tutorial", list(variant.overrides))


def test_variants_are_selected_by_name():
    assert [v.name for v in select_variants(["SPNet", "CaGNet"])] == ["CaGNet", "SPNet"]   # table order
    with pytest.raises(ConfigError, match=r"unknown ablation variant 'CaGNet\+'"):
        select_variants(["CaGNet+"])


@pytest.mark.slow
def test_run_ablation_writes_the_table(tiny_train_overrides, tmp_path):
    config = load_train_config("tutorial", [*tiny_train_overrides, *TINY])
    variants = (Variant("CaGNet", "CaGNet"), Variant("CaGNet unseen 3", "CaGNet", ("schedules.mixed.gen_unseen_rate=3",)),
                Variant("SPNet", "SPNet"))
    table = run_ablation(config, variants, seeds=(0, 1), out_dir=tmp_path, progress=False)
    stored = load_ablation(tmp_path)
    assert stored == json.loads(json.dumps(table)) and load_ablation(tmp_path / "ablation.json") == stored
    assert stored["split"] == "validation" and stored["num_images"] == 8 and stored["seeds"] == [0, 1]
    rows = stored["variants"]
    assert list(rows) == ["CaGNet", "CaGNet unseen 3", "SPNet"]
    for name in rows:
        assert 0.0 <= rows[name]["hiou"]["mean"] <= 1.0 and rows[name]["hiou"]["std"] >= 0.0
    assert rows["CaGNet"]["kl"]["mean"] is not None and rows["SPNet"]["kl"]["mean"] is None
    # the variant that only changes the mixed schedule shares the base's step-1 run
    assert len(list((tmp_path / "runs" / "0" / "cagnet").glob("step1-*"))) == 1
    assert len(list((tmp_path / "runs" / "0" / "cagnet").glob("mixed-*"))) == 2
    markdown = (tmp_path / "ablation.md").read_text()
    assert "| Variant | What changes | S-mIoU | U-mIoU | hIoU | KL |" in markdown and "Validation split" in markdown


def test_summary_and_markdown_of_records():
    variants = (Variant("A", "CaGNet", note="a"), Variant("B", "SPNet", note="b"))
    per_seed = {"0": {"A": {"seen_miou": 0.5, "unseen_miou": 0.2, "hiou": 0.3, "pixel_acc": 0, "mean_acc": 0,
                            "miou": 0, "diagnostics": {"kl": 0.01, "saturated_fraction": 0.5}},
                      "B": {"seen_miou": 0.6, "unseen_miou": 0.1, "hiou": 0.2, "pixel_acc": 0, "mean_acc": 0,
                            "miou": 0}},
                "1": {"A": {"seen_miou": 0.7, "unseen_miou": 0.4, "hiou": 0.5, "pixel_acc": 0, "mean_acc": 0,
                            "miou": 0, "diagnostics": {"kl": 0.03, "saturated_fraction": 0.3}}}}
    rows = summarise(per_seed, variants)
    assert rows["A"]["hiou"]["mean"] == pytest.approx(0.4) and rows["A"]["hiou"]["std"] == pytest.approx(0.1414, 1e-3)
    assert rows["B"]["hiou"] == {"mean": 0.2, "std": 0.0} and rows["A"]["kl"]["mean"] == pytest.approx(0.02)
    text = format_ablation_markdown({"variants": rows, "seeds": [0, 1]})
    assert "| A | a | 60.0 ± 14.1 | 30.0 ± 14.1 | 40.0 ± 14.1 | 0.02 |" in text
    assert "| B | b | 60.0 ± 0.0 | 10.0 ± 0.0 | 20.0 ± 0.0 |" in text
    only = format_ablation_markdown({"variants": rows, "seeds": [0, 1]}, rows=["B"])
    assert "| B |" in only and "| A |" not in only


def test_cli_lists_variants_and_reports_errors_in_one_line(cli_error, capsys, tmp_path):
    from cagnet.cli import main

    assert main(["ablate", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "CaGNet scratch: random initial weights" in listing and "schedules.step1.init_model=null" in listing
    assert "unknown ablation variant" in cli_error(["ablate", "--variants", "nope"])
    assert "--seeds" in cli_error(["ablate", "--seeds", "0"])
    assert "ablation table not found" in str(pytest.raises(ConfigError, load_ablation, tmp_path).value)


def test_contextual_module_rows_are_one_change_of_the_tutorial_recipe_each_with_its_own_runs():
    from cagnet.config_io import to_dict
    from cagnet.methods import recipe_digest
    from cagnet.train.runs import run_recipe

    rows = {v.name: v for v in VARIANTS}
    expected = {"CaGNet no context": "model.context_latent=none", "CaGNet latent zeroed": "model.context_latent=zeroed",
                "CaGNet latent shuffled": "model.context_latent=shuffled",
                "CaGNet no gates": "model.context_gates=false"}
    base = load_train_config("tutorial")
    assert base.model.context_latent == "contextual" and base.model.context_gates is True
    base_digest = recipe_digest(run_recipe(to_dict(base), "step1"))
    digests = {base_digest}
    for name, override in expected.items():
        assert rows[name].method == "CaGNet" and rows[name].overrides == (override,) and rows[name].note
        config = load_train_config("tutorial", [override])
        key, value = override.split("=")
        assert str(getattr(config.model, key.split(".")[1])).lower() == value   # "none" stays a string
        digests.add(recipe_digest(run_recipe(to_dict(config), "step1")))
    # a changed option is a changed recipe: every row trains its own step-1 run
    assert len(digests) == len(expected) + 1


def test_the_latent_spread_over_sigma_is_a_column_next_to_kl():
    rows = summarise({"0": {"A": {"hiou": 0.3, "diagnostics": {"kl": 0.01, "latent_mean_std_over_sigma": 0.005}}}},
                     (Variant("A", "CaGNet", note="a"),))
    assert rows["A"]["latent_mean_std_over_sigma"]["mean"] == pytest.approx(0.005)
    text = format_ablation_markdown({"variants": rows, "seeds": [0]})
    assert "| hIoU | KL | std(mu)/sigma | std(mu) |" in text and "| 0.01 | 0.005 |" in text


def test_a_table_written_before_a_diagnostic_existed_is_shown_without_its_column():
    old = {"variants": {"A": {"note": "a", "hiou": {"mean": 0.4, "std": 0.0}, "kl": {"mean": 0.02, "std": 0.0},
                              "latent_mean_std": {"mean": 0.01, "std": 0.0}}}, "seeds": [0]}
    text = format_ablation_markdown(old)
    assert "std(mu)/sigma" not in text and "| hIoU | KL | std(mu) |" in text and "| 0.02 | 0.01 |" in text


def test_paired_differences_pair_the_rows_seed_by_seed():
    from cagnet.ablate import paired_differences

    table = {"per_seed": {"0": {"CaGNet": {"hiou": 0.50}, "CaGNet no context": {"hiou": 0.47}},
                          "1": {"CaGNet": {"hiou": 0.40}, "CaGNet no context": {"hiou": 0.44}},
                          "2": {"CaGNet": {"hiou": 0.45}}}}
    paired = paired_differences(table, "CaGNet no context")
    assert paired["per_seed"] == pytest.approx({"0": -0.03, "1": 0.04})
    assert paired["mean"] == pytest.approx(0.005) and paired["wins"] == 1
    assert paired["std"] == pytest.approx(((0.035 ** 2) * 2) ** 0.5)
    with pytest.raises(ConfigError, match="no seed has both rows 'CaGNet gone' and 'CaGNet'"):
        paired_differences(table, "CaGNet gone")
