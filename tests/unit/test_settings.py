import subprocess
import sys

import pytest

from common.settings import Settings, SettingsError, markdown_table, resolve_runtime


def test_defaults_when_environment_is_empty():
    settings = Settings.from_env({})
    assert settings.enable_model_cache is True
    assert settings.model_cache_size == 128
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.max_image_side == 16384
    assert settings.max_image_pixels == 40_000_000
    assert settings.model_name == "efficientnet-lite0"
    assert settings.model_num_threads == 1
    assert (settings.model_runtime, settings.model_device, settings.model_precision) == ("auto", "cpu", "f32")


@pytest.mark.parametrize(("env", "runtime"), [
    ({}, "openvino"), ({"MODEL_DEVICE": "cuda"}, "torch"), ({"MODEL_RUNTIME": "torch"}, "torch"),
])
def test_auto_runtime_is_openvino_on_cpu_and_torch_on_cuda(env, runtime):
    settings = Settings.from_env(env)
    assert resolve_runtime(settings.model_runtime, settings.model_precision, settings.model_device) == runtime


@pytest.mark.parametrize(("env", "named"), [
    ({"MODEL_DEVICE": "cuda", "MODEL_RUNTIME": "openvino"}, "MODEL_RUNTIME=openvino"),
    ({"MODEL_RUNTIME": "torch", "MODEL_PRECISION": "bf16"}, "MODEL_PRECISION=bf16"),
    ({"MODEL_RUNTIME": "onnx"}, "MODEL_RUNTIME='onnx'"),
    ({"COMPILED_MODEL_DIR": " "}, "COMPILED_MODEL_DIR"),
])
def test_impossible_runtime_choices_fail_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


@pytest.mark.parametrize("raw", ["true", "TRUE", "True", "1", "yes", "YES", " yes "])
def test_cache_switch_on_words(raw):
    assert Settings.from_env({"ENABLE_MODEL_CACHE": raw}).enable_model_cache is True


@pytest.mark.parametrize("raw", ["false", "FALSE", "False", "0", "no", "No"])
def test_cache_switch_off_words(raw):
    assert Settings.from_env({"ENABLE_MODEL_CACHE": raw}).enable_model_cache is False


@pytest.mark.parametrize("raw", ["maybe", "", "on", "off", "2", "tru"])
def test_cache_switch_rejects_other_words(raw):
    with pytest.raises(SettingsError, match=f"ENABLE_MODEL_CACHE={raw!r}"):
        Settings.from_env({"ENABLE_MODEL_CACHE": raw})


@pytest.mark.parametrize("raw,expected", [("256", 256), ("0", 0), (" 7 ", 7), ("+5", 5)])
def test_cache_size_accepts_non_negative_integers(raw, expected):
    assert Settings.from_env({"MODEL_CACHE_SIZE": raw}).model_cache_size == expected


@pytest.mark.parametrize("raw", ["banana", "-3", "1.5", "", "1e3", "0x10"])
def test_cache_size_rejects_everything_else_naming_variable_and_value(raw):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"MODEL_CACHE_SIZE": raw})
    assert f"MODEL_CACHE_SIZE={raw!r}" in str(info.value)


@pytest.mark.parametrize(
    "name,raw",
    [("MAX_UPLOAD_BYTES", "0"), ("MAX_UPLOAD_BYTES", "ten"), ("MAX_IMAGE_SIDE", "-1"),
     ("MAX_IMAGE_PIXELS", "0"), ("MODEL_NUM_THREADS", "0"), ("READINESS_TIMEOUT_S", "0"),
     ("READINESS_TIMEOUT_S", "soon"), ("MODEL_NAME", "resnet-9000")],
)
def test_limits_reject_invalid_values(name, raw):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: raw})


def test_torchscript_model_needs_its_files():
    with pytest.raises(SettingsError, match="TORCHSCRIPT_MODEL_PATH"):
        Settings.from_env({"MODEL_NAME": "torchscript"})


def test_check_command_exits_2_with_the_message(tmp_path):
    env = {"MODEL_CACHE_SIZE": "banana", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "common.settings"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "MODEL_CACHE_SIZE='banana'" in result.stderr


def test_check_command_prints_effective_values(tmp_path):
    env = {"MODEL_CACHE_SIZE": "256", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "common.settings"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0
    line = next(l for l in result.stdout.splitlines() if l.startswith("MODEL_CACHE_SIZE"))
    assert "256" in line and "(env)" in line


def test_markdown_command_prints_the_configuration_table(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "common.settings", "--markdown"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0
    assert result.stdout.strip() == markdown_table()
