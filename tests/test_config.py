from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from stasc.config import TASK_INSTRUCTIONS, VARIANTS, StascConfig, build_parser, config_from_args
from stasc.errors import StascError

REQUIRED_FLAGS = (
    "--config --model --dataset --question-column --answers-column --variant --initialization --filter "
    "--finetuning --iterations --n-init --n-corr --max-train-questions --max-test-questions --output-dir --seed "
    "--temperature --top-p --max-new-tokens --reward --answer-extraction --lora-r --lora-alpha --learning-rate"
).split()


def test_help_documents_every_required_flag() -> None:
    text = build_parser().format_help()
    for flag in REQUIRED_FLAGS:
        assert flag in text, flag


def test_help_states_each_default_once() -> None:
    """Every setting's help says its default exactly once (a help text that describes its own default gets
    no second "(default: None)"), and None is shown as the 'none' a user would type."""
    helps = {action.dest: action.help for action in build_parser()._actions}
    for spec in dataclasses.fields(StascConfig):
        assert len(re.findall(r"default:", helps[spec.name], re.IGNORECASE)) == 1, (spec.name, helps[spec.name])
    assert "(default: None)" not in build_parser().format_help()
    assert helps["dataset_config"].endswith("(default: none)")
    assert helps["model_cache_dir"].count("$STASC_CACHE") == 1
    assert helps["lora_target_modules"].endswith("(default: all-linear)")


def test_help_shows_the_variant_the_default_switches_make() -> None:
    defaults = StascConfig()
    variant_help = next(action.help for action in build_parser()._actions if action.dest == "variant")
    assert variant_help.endswith(
        f"(default: {defaults.variant_name}, from --initialization/--filter/--finetuning)"
    )
    assert defaults.variant_name == "FBE"


@pytest.mark.parametrize("argv", [["--iteration", "3"], ["--iter", "3"], ["--n-ini", "4"], ["--varian", "EIE"]])
def test_flags_are_never_taken_by_a_prefix(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        config_from_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {' '.join(argv)}. Did you mean '--" in err


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_sets_all_three_switches(variant: str) -> None:
    config = config_from_args(["--variant", variant.lower()])
    expected = (
        {"F": "fixed", "E": "evolving"}[variant[0]],
        {"I": "improving", "N": "non_decreasing", "A": "non_decreasing_authors", "B": "balanced"}[variant[1]],
        {"F": "fixed", "E": "evolving"}[variant[2]],
    )
    assert (config.initialization, config.filter, config.finetuning) == expected
    assert config.variant_name == variant
    assert config.to_dict()["variant"] == variant


def test_switch_flags_name_the_variant() -> None:
    config = config_from_args(["--initialization", "fixed", "--filter", "non_decreasing", "--finetuning", "evolving"])
    assert config.variant_name == "FNE"


def test_yaml_is_overridden_by_flags(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("variant: EIE\nn_init: 3\nmax-new-tokens: 32\nlora_target_modules: [q_proj, v_proj]\n")
    config = config_from_args(["--config", str(path), "--n-init", "5", "--filter", "non_decreasing"])
    assert config.n_init == 5
    assert config.max_new_tokens == 32
    assert config.variant_name == "ENE"  # the flag changes only the filter of the YAML variant
    assert config.lora_target_modules == ["q_proj", "v_proj"]


def test_none_means_all_questions() -> None:
    assert config_from_args(["--max-train-questions", "none"]).max_train_questions is None


def test_contradicting_variant_and_switch_is_refused() -> None:
    with pytest.raises(StascError, match="variant EIE sets filter to 'improving'"):
        config_from_args(["--variant", "EIE", "--filter", "non_decreasing"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variant", "EIX"], "Unknown variant 'EIX'.*Did you mean 'EIF'"),
        (["--reward", "inacc"], "Invalid --reward 'inacc'.*Did you mean 'in_acc'"),
        (["--filter", "improve"], "Did you mean 'improving'"),
        (["--n-init", "0"], "--n-init must be at least 1, got 0"),
        (["--n-corr", "0"], "--n-corr must be at least 1"),
        (["--iterations", "-1"], "--iterations must be at least 0, got -1"),
        (["--max-train-questions", "0"], "--max-train-questions must be at least 1"),
        (["--top-p", "0"], "--top-p must satisfy 0 < p <= 1"),
        (["--temperature", "-0.1"], "--temperature must be at least 0"),
        (["--test-fraction", "1"], "--test-fraction must satisfy 0 < f < 1"),
        (["--learning-rate", "0"], "--learning-rate must be greater than 0"),
        (["--train-batch-size", "6", "--gradient-accumulation-steps", "4"], "must be a multiple of"),
    ],
)
def test_impossible_values_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(StascError, match=message):
        config_from_args(argv)


def test_yaml_errors_name_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("n_init: 2\nvariant: [EIE\n")
    with pytest.raises(StascError, match=rf"{path}:\d+:\d+: invalid YAML"):
        config_from_args(["--config", str(path)])


def test_yaml_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("n_inits: 2\n")
    with pytest.raises(StascError, match="unknown setting 'n_inits'. Did you mean 'n_init'"):
        config_from_args(["--config", str(path)])


def test_yaml_wrong_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "types.yaml"
    path.write_text("iterations: two\n")
    with pytest.raises(StascError, match="iterations has value 'two', which is not a valid int"):
        config_from_args(["--config", str(path)])


def test_missing_config_file() -> None:
    with pytest.raises(StascError, match="Config file not found: nope.yaml"):
        config_from_args(["--config", "nope.yaml"])


def test_shipped_configs_load() -> None:
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert configs, "configs/ ships example configurations"
    for path in configs:
        config = config_from_args(["--config", str(path)])
        assert config.variant_name in VARIANTS


def test_default_yaml_is_the_default_run() -> None:
    """configs/default.yaml says it equals `python train.py`: it must move with the defaults."""
    path = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert config_from_args(["--config", str(path)]).to_dict() == config_from_args([]).to_dict()


def test_round_trip_through_dict() -> None:
    config = StascConfig(variant="FNE", n_init=3)
    assert StascConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_self_correction_settings_are_checked() -> None:
    config = config_from_args(["--filter", "balanced", "--keep-ratio", "2", "--rationalize", "--min-train-steps", "8",
                               "--eval-samples", "4", "--eval-temperature", "0.3", "--evaluate-on", "validation"])
    assert (config.filter, config.keep_ratio, config.rationalize, config.min_train_steps) == ("balanced", 2.0, True, 8)
    assert (config.eval_samples, config.evaluation_temperature, config.evaluate_on) == (4, 0.3, "validation")
    assert config_from_args([]).evaluation_temperature == 0.6, "evaluation samples at --temperature by default"
    assert config_from_args(["--variant", "EBF"]).filter == "balanced"
    for flags, message in (
        (["--eval-samples", "3", "--eval-temperature", "0"], "same greedy answer 3 times"),
        (["--keep-ratio", "-1"], "--keep-ratio must be at least 0"),
        (["--eval-samples", "0"], "--eval-samples must be at least 1"),
        (["--validation-fraction", "1"], "--validation-fraction must satisfy"),
        (["--rationalize", "--rationalization-hint", "no placeholder"], "must contain {answer}"),
    ):
        with pytest.raises(StascError, match=message):
            config_from_args(flags)


def test_star_refuses_the_correction_levers() -> None:
    star = config_from_args(["--method", "star"])
    assert star.method == "star" and not star.own_answer_fixes, "the default own-answer fixes do not apply to STaR"
    with pytest.raises(StascError, match="--method star trains on initial answers only"):
        config_from_args(["--method", "star", "--own-answer-fixes"])
    with pytest.raises(StascError, match="--eval-rounds must be at least 1"):
        config_from_args(["--eval-rounds", "0"])


def test_math_task_brings_its_instructions_unless_they_are_given(tmp_path: Path) -> None:
    math = config_from_args(["--task", "math"])
    assert (math.instructions, math.correction_instructions) == TASK_INSTRUCTIONS["math"]
    assert "\\boxed{}" in math.instructions
    qa = config_from_args([])
    assert (qa.task, qa.instructions, qa.correction_instructions) == ("qa", *TASK_INSTRUCTIONS["qa"])
    mine = config_from_args(["--task", "math", "--instructions", "Solve it."])
    assert (mine.instructions, mine.correction_instructions) == ("Solve it.", TASK_INSTRUCTIONS["math"][1])
    path = tmp_path / "math.yaml"
    path.write_text("task: math\ncorrection_instructions: Check it.\n")
    from_yaml = config_from_args(["--config", str(path)])
    assert (from_yaml.instructions, from_yaml.correction_instructions) == (TASK_INSTRUCTIONS["math"][0], "Check it.")


def test_math_task_refuses_the_qa_reward_flags() -> None:
    with pytest.raises(StascError, match="--task math always scores the final answer by mathematical equivalence"):
        config_from_args(["--task", "math", "--reward", "em"])
    with pytest.raises(StascError, match="Drop those flags, or use --task qa"):
        config_from_args(["--task", "math", "--answer-extraction", "final_answer"])
    with pytest.raises(StascError, match="Invalid --task 'maths'.*Did you mean 'math'"):
        config_from_args(["--task", "maths"])


def test_help_says_what_each_task_evaluates() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "--task {qa,math}" in text
    assert "evaluated by in-accuracy" in text and "evaluated by that same math accuracy" in text
