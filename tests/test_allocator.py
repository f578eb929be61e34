"""The pure parts of ravit.allocator; os.execve is replaced, nothing re-executes."""

import pytest

from ravit import allocator
from ravit.allocator import (
    OPT_OUT_VAR,
    TUNED_MALLOC_ENV,
    allocator_status,
    opted_out,
    reexec_with_tuned_allocator,
    tuned_env,
)


def test_adds_every_setting_to_a_bare_environment():
    env = tuned_env({"PATH": "/usr/bin"})
    assert env == {
        "PATH": "/usr/bin",
        "MALLOC_TRIM_THRESHOLD_": "1000000000000",
        "MALLOC_MMAP_THRESHOLD_": "33554432",
        "MALLOC_TOP_PAD_": "536870912",
    }


def test_the_input_is_left_alone():
    environ = {"HOME": "/root"}
    tuned_env(environ)
    assert environ == {"HOME": "/root"}


def test_user_values_win_and_only_missing_ones_are_added():
    env = tuned_env({"MALLOC_TOP_PAD_": "0"})
    assert env["MALLOC_TOP_PAD_"] == "0"
    assert env["MALLOC_TRIM_THRESHOLD_"] == TUNED_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]


def test_nothing_to_change_when_all_are_set():
    assert tuned_env(dict(TUNED_MALLOC_ENV)) is None
    assert tuned_env({k: "1" for k in TUNED_MALLOC_ENV}) is None


@pytest.mark.parametrize("value", ["1", "yes", "true", "TRUE", " 1 "])
def test_opt_out(value):
    assert opted_out({OPT_OUT_VAR: value})
    assert tuned_env({OPT_OUT_VAR: value}) is None


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_values_that_do_not_opt_out(value):
    assert not opted_out({OPT_OUT_VAR: value})
    assert tuned_env({OPT_OUT_VAR: value}) is not None


def test_status():
    assert allocator_status({}) == "default"
    assert allocator_status({"MALLOC_TOP_PAD_": "1"}) == "partly-tuned"
    assert allocator_status(dict(TUNED_MALLOC_ENV)) == "tuned"


# -- reexec_with_tuned_allocator, with os.execve recorded instead of run ------------


@pytest.fixture
def execs(monkeypatch):
    """A bare environment on a glibc Linux; returns the list of execve calls made."""
    for key in (*TUNED_MALLOC_ENV, OPT_OUT_VAR):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator, "_uses_glibc", lambda: True)
    calls = []
    monkeypatch.setattr(allocator.os, "execve", lambda *a: calls.append(a))
    return calls


def test_reexec_runs_the_command_again_with_the_settings(execs):
    reexec_with_tuned_allocator(["python", "-m", "ravit", "flops"])
    [(path, args, env)] = execs
    assert path == allocator.sys.executable
    assert args == ["python", "-m", "ravit", "flops"]
    assert all(env[k] == v for k, v in TUNED_MALLOC_ENV.items())


def test_reexec_defaults_to_the_original_command_line(execs, monkeypatch):
    monkeypatch.setattr(allocator.sys, "orig_argv", ["python3", "-u", "train.py", "--x"])
    monkeypatch.setattr(allocator.sys, "argv", ["train.py", "--x"])
    reexec_with_tuned_allocator()
    assert execs[0][1] == ["python3", "-u", "train.py", "--x"]


@pytest.mark.parametrize("script", ["-", ""])
def test_no_reexec_of_stdin_or_interactive_sessions(execs, monkeypatch, script):
    monkeypatch.setattr(allocator.sys, "argv", [script])
    assert reexec_with_tuned_allocator() is False
    assert not execs


def test_no_reexec_when_already_tuned(execs, monkeypatch):
    for key, value in TUNED_MALLOC_ENV.items():
        monkeypatch.setenv(key, value)
    assert reexec_with_tuned_allocator(["python"]) is False
    assert not execs


def test_no_reexec_when_opted_out(execs, monkeypatch):
    monkeypatch.setenv(OPT_OUT_VAR, "1")
    assert reexec_with_tuned_allocator(["python"]) is False
    assert not execs


@pytest.mark.parametrize("platform, glibc", [("darwin", False), ("win32", False), ("linux", False)])
def test_no_reexec_off_glibc_linux(execs, monkeypatch, platform, glibc):
    monkeypatch.setattr(allocator.sys, "platform", platform)
    monkeypatch.setattr(allocator, "_uses_glibc", lambda: glibc)
    assert reexec_with_tuned_allocator(["python"]) is False
    assert not execs


def test_a_failed_exec_is_logged_not_raised(execs, monkeypatch, caplog):
    def fail(*_):
        raise OSError("no such file")

    monkeypatch.setattr(allocator.os, "execve", fail)
    assert reexec_with_tuned_allocator(["python"]) is False
    assert "could not re-execute" in caplog.text


def test_an_empty_argv_is_rejected(execs):
    with pytest.raises(ValueError, match="argv is empty"):
        reexec_with_tuned_allocator([])
    assert not execs
