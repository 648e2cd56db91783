"""The admin tools' command lines (`python -m services.tuning.answerability`, `… .reader`, and any other
`python -m services.tuning.*` entry point) speak Chinese like `wendao` does: the same parser
(services.arguments), Chinese help, argparse's errors translated, exit code 2 after the usage line.
They were English (「usage:」, 「error: the following arguments are required」, English help)."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from conftest import ROOT

ENGLISH = ("usage:", "error:", "options:", "show this help", "required", "invalid", "unrecognized", "question sets",
           "model folder", "Traceback", "unexpected keyword")
TOOLS = sorted(f"services.tuning.{p.stem}" for p in (Path(ROOT) / "services" / "tuning").glob("*.py")
               if '__name__ == "__main__"' in p.read_text(encoding="utf-8"))


def test_the_tools_are_found():
    assert {"services.tuning.answerability", "services.tuning.reader"} <= set(TOOLS)


def _run(tool: str, argv: list[str], capsys) -> tuple[int, str, str]:
    main = importlib.import_module(tool).main  # every entry point is main(argv)
    with pytest.raises(SystemExit) as done:
        main(argv)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


@pytest.mark.parametrize("tool", TOOLS)
def test_help_is_chinese(tool, capsys):
    code, out, _ = _run(tool, ["-h"], capsys)
    assert code == 0 and out.startswith(f"用法： python -m {tool}"), out
    assert "显示这段帮助后退出" in out and "选项" in out and "问题集所在的文件夹" in out
    assert not any(word in out for word in ENGLISH), out


@pytest.mark.parametrize("args, said", [
    ([], "缺少必需的参数：--data, --out"),
    (["--data", "/no/such/folder", "--out", "x"], "参数 --data：文件夹「/no/such/folder」不存在"),
    (["--data", "{tmp}", "--out", "x", "--bogus"], "无法识别的参数：--bogus"),
    (["--data", "{tmp}", "--out", "x", "--set", "layers"], "参数 --set：「layers」不是「名称=值」的形式（例如 layers=6"),
    (["--data", "{tmp}", "--out", "x", "--set", "nosuch=3"], "参数 --set：没有「nosuch」这一项（可选："),
    (["--data", "{tmp}", "--out", "x", "--source-questions", "drcd_dev=many"], "参数 --source-questions：「drcd_dev=many」的值无效"),
])
@pytest.mark.parametrize("tool", TOOLS)
def test_argument_errors_are_chinese_with_exit_code_2(tool, args, said, tmp_path, capsys):
    code, _, err = _run(tool, [a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    lines = err.splitlines()
    assert code == 2 and lines[0].startswith(f"用法： python -m {tool}"), err
    assert f"{tool}：错误：" in lines[-1] and said in lines[-1], err
    assert not any(word in err for word in ENGLISH), err
