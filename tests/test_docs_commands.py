"""Every shell command the README and docs/ show is checked by the program's own parser, or marked illustrative.

The commands are extracted from the documents, never copied here, so a documented command
that drifts from the code fails this test:

- every fenced block names its language (```bash, ```text, ...), so no command hides in an
  unlabelled block; ```bash / ```sh / ```shell blocks are commands, ```console blocks are
  commands on their `$ ` lines;
- inline code that is a whole command (it starts with one of the checked programs, has an
  argument beyond the sub-command and no placeholder such as `…`, `...`, `<run>` or `a|b`)
  is checked too; inline names of a command (`clinfuse train`) and patterns are prose;
- each command (lines joined at a trailing backslash, split at `;`, `&&`, `||`, `|` and `&`,
  comments and leading `VAR=value` assignments dropped) is parsed, never run:
  `make T` -> `make -n T` (the target exists), `clinfuse ...` / `python -m clinfuse.pipeline ...`
  -> the CLI's argparse parser (`pipeline.cli.build_parser`), `python <script>.py ...` -> the
  script's own argparse parser, stopped before its work, `dvc ...` -> `dvc.cli.parse_args`,
  `mlflow ...` -> click's `make_context` down mlflow's command groups, `torchrun ...` ->
  `torch.distributed.run`'s parser and then the module it starts with the arguments it passes;
- programs of other projects (git, pip, curl, ...) are listed in EXTERNAL with why they are
  not parsed; any other command must carry the comment `# illustrative` (on its line, or on
  the first line of its block for the whole block), or this test fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
ILLUSTRATIVE = "illustrative"
# Programs of other projects the docs call with their standard arguments: not parsed here.
EXTERNAL = {
    "git": "git's own commands (add, commit, pull, checkout)",
    "pip": "installs packages; its arguments are pip's",
    "curl": "an HTTP client posting to the served model",
    "sbatch": "SLURM's job submission, on the user's cluster",
    "export": "a shell builtin",
    "cd": "a shell builtin",
}
PREFIX_WORDS = {"do", "then", "else", "if", "while", "until", "!", "{"}  # the command after them is checked
SKIPPED_WORDS = {"for", "done", "fi", "}", "case", "esac"}  # shell syntax, not a command
PLACEHOLDER = re.compile(r"…|\.\.\.|<[^>]*>|\||/--| / ")
CHECKED = ("make", "clinfuse", "dvc", "mlflow", "torchrun", "python")


@dataclass(frozen=True)
class Command:
    """One command as documented: where it is, its words, and whether it is marked illustrative."""

    where: str  # "README.md:176"
    argv: tuple[str, ...]
    illustrative: bool = False
    inline: bool = False  # prose may name a command and its options without their required values

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


class Unverifiable(Exception):
    """No parser checks this program and it is neither external nor marked illustrative."""


# --- extraction ---------------------------------------------------------------------------------


def fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first content line, content lines) of each ``` block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^\s*```\s*(\S*)", lines[i])
        if opening:
            end = next(j for j in range(i + 1, len(lines)) if re.match(r"^\s*```\s*$", lines[j]))
            yield opening.group(1), i + 2, lines[i + 1:end]
            i = end + 1
        else:
            i += 1


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: words of each, split at ; && || | &, with comments,
    redirections, leading VAR=value assignments and keywords (do, then, if, ...) dropped; a `for ...`
    header and closing words (done, fi) are no commands."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    tokens = list(lexer)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in {";", "&&", "||", "|", "&", "(", ")"}:
            out.append([])
        elif tok in {">", ">>", "<", ">&"}:
            if out[-1] and out[-1][-1].isdigit():
                out[-1].pop()  # the file descriptor of 2> file
            i += 1  # the redirection's target
        else:
            out[-1].append(tok)
        i += 1
    commands = []
    for words in out:
        while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in PREFIX_WORDS):
            words = words[1:]
        if words and words[0] not in SKIPPED_WORDS:
            commands.append(words)
    return commands


def block_commands(path: Path, lang: str, first: int, lines: list[str]) -> list[Command]:
    """The commands of one shell block (continuation lines joined)."""
    whole_block = bool(lines) and lines[0].lstrip().startswith("#") and ILLUSTRATIVE in lines[0]
    out = []
    pending, start = "", first
    for n, raw in enumerate(lines, first):
        line = raw
        if lang == "console":
            if not line.lstrip().startswith("$ ") and not pending:
                continue  # program output
            line = line.lstrip().removeprefix("$ ")
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        marked = whole_block or bool(re.search(r"#.*\b" + ILLUSTRATIVE, line))
        for words in split_commands(line):
            out.append(Command(_where(path, start), tuple(words), marked))
    return out


def inline_commands(path: Path, text: str) -> list[Command]:
    """Inline code spans that are whole commands of a checked program (see the module docstring)."""
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    out = []
    for m in re.finditer(r"`([^`\n]+)`", prose):
        span = m.group(1).strip()
        words = span.split()
        program = words[0].removeprefix(".venv/bin/") if words else ""
        if program not in CHECKED or PLACEHOLDER.search(span) or len(words) < 2:
            continue
        line = prose.count("\n", 0, m.start()) + 1
        out.extend(Command(_where(path, line), tuple(w), inline=True) for w in split_commands(span))
    return out


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{line}"


def documented_commands(docs: list[Path] = DOCS) -> list[Command]:
    """Every command of the shell blocks and the inline code of `docs`, in document order."""
    out = []
    for path in docs:
        text = path.read_text()
        for lang, first, lines in fenced_blocks(text):
            if lang in SHELL:
                out.extend(block_commands(path, lang, first, lines))
        out.extend(inline_commands(path, text))
    return out


# --- checking -----------------------------------------------------------------------------------


def check(argv: tuple[str, ...] | list[str], names_only: bool = False) -> None:
    """Parse `argv` with its program's own parser; AssertionError naming the problem if it is rejected,
    Unverifiable if no parser checks the program.

    names_only (inline code in prose, e.g. `clinfuse train --tuned`): the command and every option must
    exist, but required arguments and an option's value may be left out.
    """
    program, args = argv[0].removeprefix(".venv/bin/"), list(argv[1:])
    if program in EXTERNAL:
        return
    checker = CHECKERS.get(program)
    if checker is None:
        raise Unverifiable(f"{program}: no parser checks it; mark the command '# {ILLUSTRATIVE}' or add a checker")
    checker(args, names_only)


@contextlib.contextmanager
def _relaxed(parser: argparse.ArgumentParser, on: bool) -> Iterator[None]:
    """Nothing required, down every sub-command, while inside (names_only mode); restored after, since
    a program may cache its parser (dvc does)."""
    saved: list[tuple[object, bool]] = []

    def relax(p: argparse.ArgumentParser) -> None:
        for item in [*p._actions, *p._mutually_exclusive_groups]:
            saved.append((item, item.required))
            item.required = False
            if isinstance(item, argparse._SubParsersAction):
                for sub in item.choices.values():
                    relax(sub)

    if on:
        relax(parser)
    try:
        yield
    finally:
        for item, required in reversed(saved):  # an action shared by sub-parsers (parents=) is saved twice
            item.required = required  # type: ignore[attr-defined]


def _argparse_accepts(parser: argparse.ArgumentParser, args: list[str], what: str,
                      names_only: bool = False, logger: str | None = None) -> argparse.Namespace | None:
    """parser.parse_args(args), or AssertionError with the parser's own message. `--help` counts as accepted.

    logger: a logging logger the program reports parse errors to instead of stderr (dvc's).
    """
    err = io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))  # "ERROR: unrecognized arguments: ..."
    log = logging.getLogger(logger) if logger else None
    if log:
        log.addHandler(handler)
    try:
        with _relaxed(parser, names_only), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(args)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return None
        failure: BaseException = exc
    except Exception as exc:  # dvc's parser raises DvcParserError instead of exiting
        failure = exc
    finally:
        if log:
            log.removeHandler(handler)
    message = [line for line in err.getvalue().splitlines() if "error" in line.lower()][-1:]
    if names_only and message and "expected one argument" in message[0]:
        return _argparse_accepts(parser, [*args, "VALUE"], what, names_only, logger)  # an option named without its value
    raise AssertionError(f"{what} rejects {shlex.join(args)}: {message}") from failure


def check_clinfuse(args: list[str], names_only: bool = False) -> None:
    from clinfuse.pipeline.cli import build_parser

    _argparse_accepts(build_parser(), args, "clinfuse", names_only)


def check_python(args: list[str], names_only: bool = False) -> None:
    if args[:2] == ["-m", "clinfuse.pipeline"]:
        return check_clinfuse(args[2:], names_only)
    if args[:1] == ["-m"]:  # another module (e.g. the standard library's json.tool): it must be importable here
        import importlib.util

        assert len(args) > 1 and importlib.util.find_spec(args[1]) is not None, f"python -m: no module {args[1:2]}"
        return None
    script = ROOT / args[0]
    assert script.suffix == ".py" and script.is_file(), f"python {args[0]}: no such script in the repository"
    _script_accepts(script, args[1:])


class _Parsed(Exception):
    """Raised by the patched parse_args once a script's arguments are parsed: its work does not run."""


def _script_accepts(script: Path, args: list[str]) -> None:
    """Run `script` up to its argparse parse_args (module-level code and imports included), stop there."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, argv=None, namespace=None):
        original(self, argv, namespace)
        raise _Parsed

    argv, err = sys.argv, io.StringIO()
    sys.argv = [str(script), *args]
    argparse.ArgumentParser.parse_args = parse_then_stop  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stderr(err):
            runpy.run_path(str(script), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as exc:
        raise AssertionError(f"{script.name} rejects {shlex.join(args)}: {err.getvalue().strip()[-300:]}") from exc
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        sys.argv = argv
    raise AssertionError(f"{script.name} never parsed its arguments (no argparse parser to check them with)")


def check_dvc(args: list[str], names_only: bool = False) -> None:
    from dvc.cli.parser import get_main_parser  # what dvc.cli.parse_args parses with

    _argparse_accepts(get_main_parser(), args, "dvc", names_only, logger="dvc")


def check_mlflow(args: list[str], names_only: bool = False) -> None:
    import click
    from mlflow.cli import cli

    cmd: click.Command = cli
    if names_only:  # the command path exists and so does every option of the command it names
        words = list(args)
        while isinstance(cmd, click.Group) and words and not words[0].startswith("-"):
            sub = cmd.get_command(click.Context(cmd), words.pop(0))
            assert sub is not None, f"mlflow {shlex.join(args)}: no such command"
            cmd = sub
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        unknown = [w.split("=")[0] for w in words if w.startswith("-") and w.split("=")[0] not in known]
        assert not unknown, f"mlflow {shlex.join(args)}: no option {unknown}"
        return
    try:
        ctx = cmd.make_context("mlflow", list(args))
        while isinstance(cmd, click.Group):  # down the groups to the command, parsing each level's options
            rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
            name, sub, rest = cmd.resolve_command(ctx, rest)
            assert name is not None and sub is not None, f"mlflow {shlex.join(args)}: no command"
            ctx = sub.make_context(name, rest, parent=ctx)
            cmd = sub
    except click.exceptions.ClickException as exc:
        raise AssertionError(f"mlflow rejects {shlex.join(args)}: {exc.format_message()}") from exc


def check_make(args: list[str], names_only: bool = False) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"make {shlex.join(args)}: {done.stderr.strip()[-300:]}"


def check_torchrun(args: list[str], names_only: bool = False) -> None:
    from torch.distributed.run import get_args_parser

    ns = _argparse_accepts(get_args_parser(), args, "torchrun", names_only)
    if ns is None:
        return
    if ns.module:  # what each worker runs: python -m <module> <args>
        check_python(["-m", ns.training_script, *ns.training_script_args], names_only)
    else:
        check_python([ns.training_script, *ns.training_script_args], names_only)


CHECKERS = {"clinfuse": check_clinfuse, "python": check_python, "dvc": check_dvc, "mlflow": check_mlflow,
            "make": check_make, "torchrun": check_torchrun}
COMMANDS = documented_commands()


# --- the documents ------------------------------------------------------------------------------


def test_every_fenced_block_names_its_language():
    bare = [f"{p.relative_to(ROOT)}:{first - 1}" for p in DOCS for lang, first, _ in fenced_blocks(p.read_text())
            if not lang]
    assert not bare, f"fenced blocks without a language (```bash for commands, ```text otherwise): {bare}"


def test_the_documents_show_commands_of_every_checked_program():
    programs = {c.argv[0].removeprefix(".venv/bin/") for c in COMMANDS}
    assert {"make", "clinfuse", "dvc", "mlflow", "torchrun", "python"} <= programs


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command_is_accepted_by_its_programs_parser(command):
    if command.illustrative:
        return  # the docs say it is an example, not a command to run as written
    check(command.argv, names_only=command.inline)


# --- the checker itself -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    "make no-such-target",
    "clinfuse train --cohort c --method masam --no-such-flag",
    "clinfuse no-such-command",
    "python -m clinfuse.pipeline evaluate --no-such-flag",
    "python benchmarks/efficiency.py --cohort c --no-such-flag",
    "dvc exp show --no-such-flag",
    "mlflow models serve -m models:/m@champion --no-such-flag",
    "mlflow models no-such-command",
    "torchrun --no-such-flag -m clinfuse.pipeline train --cohort c --method masam",
    "torchrun --standalone -m clinfuse.pipeline train --cohort c --method masam --no-such-flag",
])
def test_a_command_with_a_flag_or_name_its_parser_rejects_fails(bad):
    with pytest.raises(AssertionError):
        check(shlex.split(bad))


@pytest.mark.parametrize("bad", ["clinfuse train --no-such-flag", "clinfuse no-such-command --x",
                                 "mlflow models serve --no-such-flag", "dvc exp no-such-command",
                                 "dvc exp show --no-such-flag"])
def test_a_command_named_in_prose_still_needs_a_real_command_and_real_options(bad):
    with pytest.raises(AssertionError):
        check(shlex.split(bad), names_only=True)


def test_prose_may_name_a_command_and_its_options_without_their_values():
    for named in ("clinfuse train --tuned", "clinfuse tune --worker", "mlflow models serve", "dvc exp"):
        check(shlex.split(named), names_only=True)
        with pytest.raises(AssertionError):
            check(shlex.split(named))


def test_a_good_command_of_each_kind_passes():
    for good in ("make test", "clinfuse train --cohort c --method masam --seed 1",
                 "python benchmarks/efficiency.py --cohort c --repeats 3", "dvc exp show --only-changed",
                 "mlflow models serve -m models:/m@champion --env-manager local -p 5001",
                 "torchrun --standalone --nproc_per_node 2 -m clinfuse.pipeline train --cohort c --method masam"):
        check(shlex.split(good))


def test_a_document_with_a_rejected_flag_in_a_block_or_in_prose_fails(tmp_path):
    doc = tmp_path / "guide.md"
    doc.write_text("Run `clinfuse train --cohort c --methd masam` first.\n\n```bash\ndvc repro\n"
                   "dvc exp show --only-changd   # a typo\n```\n")
    commands = documented_commands([doc])
    assert [(c.where, c.argv[:2]) for c in commands] == [
        ("guide.md:4", ("dvc", "repro")), ("guide.md:5", ("dvc", "exp")), ("guide.md:1", ("clinfuse", "train"))]
    check(commands[0].argv)
    for bad in commands[1:]:
        with pytest.raises(AssertionError, match="unrecognized arguments"):
            check(bad.argv, names_only=bad.inline)


def test_an_unknown_program_fails_unless_marked_illustrative():
    unmarked = block_commands(ROOT / "README.md", "bash", 1, ["frobnicate --all"])
    with pytest.raises(Unverifiable):
        check(unmarked[0].argv)
    marked = block_commands(ROOT / "README.md", "bash", 1, ["frobnicate --all   # illustrative: your cluster's tool"])
    whole = block_commands(ROOT / "README.md", "bash", 1, ["# illustrative", "frobnicate --all", "frob2 -x"])
    assert marked[0].illustrative and all(c.illustrative for c in whole)


def test_shell_lines_split_into_commands_without_comments_assignments_or_keywords():
    line = ("for g in 1 2 3; do CUDA_VISIBLE_DEVICES=$g clinfuse tune --worker & done  # on GPUs 1-3\n")
    assert split_commands(line) == [["clinfuse", "tune", "--worker"]]
    assert split_commands("if ! clinfuse tables 2> err.txt; then echo failed; fi") == [
        ["clinfuse", "tables"], ["echo", "failed"]]
    assert split_commands("dvc queue start --jobs 4 && dvc queue status") == [
        ["dvc", "queue", "start", "--jobs", "4"], ["dvc", "queue", "status"]]
    joined = block_commands(ROOT / "README.md", "bash", 10, ["torchrun --standalone \\", "    -m clinfuse.pipeline train"])
    assert [(c.where, c.argv) for c in joined] == [
        ("README.md:10", ("torchrun", "--standalone", "-m", "clinfuse.pipeline", "train"))]
    console = block_commands(ROOT / "README.md", "console", 1, ["$ make test", "12 passed"])
    assert [c.argv for c in console] == [("make", "test")]
