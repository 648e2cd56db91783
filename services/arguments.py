"""argparse speaking Chinese, for every command line of the project: `wendao` (services.cli) and the
admin tools run as `python -m services.tuning.answerability` / `python -m services.tuning.reader`.

`ArgumentParser` prints 「用法：」, Chinese section titles and -h, and translates argparse's own error
messages; `key_values` and `existing_dir` are argument types whose errors are Chinese too (argparse
shows them after 「参数 --set：」). Base layer: no imports from the rest of the project."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable, Iterable

# argparse's own messages (Python 3.10-3.13 wording), as a Chinese user reads them. What matches none
# (a message of ours) is shown as it is.
_ARG_NAMES = {"command": "命令", "action": "操作"}  # the sub-command choices' dest
_ARG_ERRORS = [
    (r"the following arguments are required: (.+)",
     lambda m: "缺少必需的参数：" + ", ".join(_ARG_NAMES.get(a, a) for a in m[1].split(", "))),
    (r"unrecognized arguments: (.+)", lambda m: f"无法识别的参数：{m[1]}"),
    (r"argument (\S+?): (.+)", lambda m: f"{_ARG_NAMES.get(m[1], '参数 ' + m[1])}：{_arg_error_zh(m[2])}"),
    (r"invalid choice: (.+?) \(choose from (.+)\)", lambda m: f"没有 {m[1]} 这一项（可选：{m[2]}）"),
    (r"invalid int value: (.+)", lambda m: f"{m[1]} 不是整数"),
    (r"invalid float value: (.+)", lambda m: f"{m[1]} 不是数字"),
    (r"invalid (\S+) value: (.+)", lambda m: f"无效的值：{m[2]}"),
    (r"expected one argument", lambda m: "需要跟一个值"),
    (r"expected at most one argument", lambda m: "最多跟一个值"),
    (r"expected at least one argument", lambda m: "至少需要跟一个值"),
    (r"expected (\d+) arguments?", lambda m: f"需要跟 {m[1]} 个值"),
    (r"not allowed with argument (.+)", lambda m: f"不能与 {m[1]} 同时使用"),
    (r"one of the arguments (.+) is required", lambda m: f"{m[1]} 中必须给出一个"),
    (r"ambiguous option: (\S+) could match (.+)", lambda m: f"选项 {m[1]} 有歧义，可能是：{m[2]}"),
    (r"ignored explicit argument (.+)", lambda m: f"这个选项不接受值：{m[1]}"),
    (r"can't open '(.+)': (.+)", lambda m: f"无法打开「{m[1]}」：{m[2]}"),
]


def _arg_error_zh(message: str) -> str:
    """An argparse error message in Chinese (unchanged when it is not one of argparse's)."""
    for pattern, say in _ARG_ERRORS:
        found = re.fullmatch(pattern, message, re.S)
        if found:
            return say(found)
    return message


class _HelpFormatter(argparse.HelpFormatter):
    def _split_lines(self, text, width):
        import textwrap

        # an option named in a help line ("--chunk-size") is never cut at its hyphen
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)

    def _format_usage(self, usage, actions, groups, prefix):
        text = super()._format_usage(usage, actions, groups, prefix)
        # 「用法： 」 is as wide in a terminal as "usage: " (three double-width characters and a space),
        # so the wrapped lines stay aligned under the first argument
        return text.replace("usage: ", "用法： ", 1) if prefix is None else text


class ArgumentParser(argparse.ArgumentParser):
    """argparse speaking Chinese: 「用法：wendao search …」, section titles and -h in Chinese, and its
    errors ("the following arguments are required: --kb", "invalid choice", "unrecognized
    arguments") translated; still exit code 2 after the usage line. Sub-command parsers are of
    this class too (argparse makes them of the parent's class)."""

    def __init__(self, *args, add_help: bool = True, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, add_help=False, **kwargs)
        self._positionals.title = "位置参数"
        self._optionals.title = "选项"
        if add_help:
            self.add_argument("-h", "--help", action="help", default=argparse.SUPPRESS, help="显示这段帮助后退出")

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}：错误：{_arg_error_zh(message)}\n")


def key_values(convert: Callable[[str], object], example: str,
               names: Iterable[str] | None = None) -> Callable[[str], dict]:
    """An argument type for "k=v,k=v" (e.g. --set layers=6,max_length=192): a dict of each key to
    `convert(value)`; a malformed item, or a key not among `names` (when given), is an argparse
    error in Chinese that shows `example` (or the names there are)."""
    known = None if names is None else list(names)

    def parse(text: str) -> dict:
        out = {}
        for item in filter(None, text.split(",")):
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not key:
                raise argparse.ArgumentTypeError(f"「{item}」不是「名称=值」的形式（例如 {example}）")
            if known is not None and key not in known:
                raise argparse.ArgumentTypeError(f"没有「{key}」这一项（可选：{', '.join(known)}）")
            try:
                out[key] = convert(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"「{item}」的值无效（例如 {example}）") from None
        return out

    return parse


def existing_dir(text: str) -> Path:
    """An argument type: a folder that exists (else a Chinese argparse error)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"文件夹「{text}」不存在")
    return path
