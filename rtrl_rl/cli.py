"""How the command-line tools end on an error: one short message, not a traceback.

    if __name__ == "__main__":
      cli.run(main)        # an argparse tool: main(argv) -> exit code
      cli.run_absl(main)   # an absl tool (app.run)

A user's mistake (a bad flag, a file that is not there, a directory that cannot be written) is a
`UsageError`, or an error of the tool's own that it passes to `report` with exit code 2; a run that
failed is reported with exit code 1. Either way stderr gets one `error: ...` paragraph saying what
is wrong and how to fix it. `--verbose` on the command line adds the traceback; any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, NoReturn

VERBOSE_HELP = "also show the traceback of an error (a user's mistake is otherwise one message)"
_verbose = False


class UsageError(Exception):
  """A mistake in the command line or in what it names: `error: <message>`, exit code 2."""


def report(error: BaseException, code: int, message: str | None = None) -> int:
  """Prints `error: <message>` (default: the error's own), after the traceback under --verbose;
  returns `code`, the exit code."""
  if _verbose:
    traceback.print_exception(error)
  sys.stdout.flush()
  print(f"error: {message or error}", file=sys.stderr, flush=True)
  return code


def run(main: Callable[[list[str]], int | None]) -> NoReturn:
  """Exits with `main(<the command line's arguments>)`; a UsageError exits 2."""
  global _verbose
  argv = sys.argv[1:]
  _verbose = "--verbose" in argv
  try:
    code = main(argv)
  except UsageError as e:
    code = report(e, 2)
  except BrokenPipeError:  # stdout closed early (`... | head`): no error of the tool
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes it at exit
    code = 141  # what a shell reports for SIGPIPE
  sys.exit(code)


def run_absl(
  main: Callable[[list[str]], int | None], renamed: Callable[[list[str]], str | None] | None = None
) -> NoReturn:
  """`run` of absl's `app.run(main)`, with `--verbose` defined and every flag error a UsageError:
  an unknown flag, a bad value, a config file (ml_collections `config_flags`) that cannot be loaded.
  `renamed(paths) -> message | None`: names the new field when a `--config.<path>` override uses
  an old one (`experiment.renamed_field_error`)."""
  from absl import app, flags  # noqa: PLC0415 - start-up time of the argparse tools (launch/)

  flags.DEFINE_bool("verbose", False, VERBOSE_HELP)
  parse = lambda argv: _parse_absl_flags(argv, renamed)
  run(lambda argv: app.run(main, argv=[sys.argv[0], *argv], flags_parser=parse))


def _parse_absl_flags(argv: list[str], renamed=None) -> list[str]:
  """absl's flag parsing, every mistake a UsageError (also an exception of a config file)."""
  global _verbose
  from absl import flags  # noqa: PLC0415 - start-up time of the argparse tools (launch/)
  from ml_collections.config_flags.config_flags import is_config_flag  # noqa: PLC0415 - start-up time

  names = [n for n in flags.FLAGS if is_config_flag(flags.FLAGS[n])]
  try:
    args = flags.FLAGS(argv)
    for name in names:  # a config file that could not be read: ml_collections defers its OSError to
      if flags.FLAGS[name].value is not None:  # the first access of the value
        getattr(flags.FLAGS[name].value, "keys")
  except flags.Error as e:
    if names and "Traceback" in str(e):  # ml_collections embeds a config file's traceback in its error
      raise UsageError(_config_error(e, argv, names)) from e
    raise UsageError(
      f"{e}; --helpfull lists the flags" if isinstance(e, flags.UnrecognizedFlagError) else str(e)
    ) from e
  except Exception as e:  # pylint: disable=broad-except
    if not names:
      raise
    overrides = [a[2:].split("=", 1)[0].split(".", 1)[1] for a in argv[1:] if "." in a.split("=", 1)[0]]
    if renamed is not None and renamed(overrides):
      raise UsageError(renamed(overrides)) from e
    raise UsageError(_config_error(e, argv, names)) from e  # a config file or an override raised
  _verbose = flags.FLAGS.verbose
  return args


def _root_cause(error: BaseException) -> BaseException:
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  return error


def describe(error: BaseException) -> str:
  """`Type: message` on one line: an error raised by a file of the user's (a config, a sweep)."""
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _sentence(error: BaseException) -> str:
  text = describe(error)
  return text if text.endswith((".", "?", "!")) else text + "."


def _config_error(error: Exception, argv: list[str], names: list[str]) -> str:
  """`--config=<file>: <what went wrong>. <the fix>` for an error raised while a config loaded."""
  given = [a for a in argv[1:] if any(a.startswith(f"--{n}=") for n in names)]
  flag = " ".join(given) or f"--{names[0]}"
  cause = _root_cause(error)
  if isinstance(cause, OSError):  # ml_collections raises a missing file's error without its errno
    return (
      f"{flag}: cannot read the config file: {cause.strerror or 'No such file or directory'}. "
      "Pass an existing config file (the experiment configs are in configs/)"
    )
  fix = (
    f"Check the field names of the --{names[0]}.<field> overrides"
    if isinstance(cause, (KeyError, AttributeError))
    else "Fix the config file or its argument"
  )
  return f"{flag}: loading the config failed: {_sentence(cause)} {fix} (--verbose shows the traceback)"


def check_writable(path: str, flag: str, *, directory: bool = False) -> None:
  """UsageError unless this user can write `path` (a directory when `directory`, else a file) or
  create it. `flag` is the option that chooses `path`, named in the message."""
  kind = "directory" if directory else "file"
  if os.path.exists(path) and os.path.isdir(path) != directory:
    other = "file" if directory else "directory"
    raise UsageError(f"{path} is a {other}, not a {kind}: choose a {kind} path with {flag}")
  where = os.path.abspath(path) if directory else os.path.dirname(os.path.abspath(path))
  while not os.path.exists(where):  # the nearest existing directory, where `path` would be created
    where = os.path.dirname(where)
  if not os.path.isdir(where):
    raise UsageError(f"{path} lies under {where}, which is a file: choose another path with {flag}")
  blocked = where if not os.access(where, os.W_OK | os.X_OK) else None
  if blocked is None and not directory and os.path.exists(path) and not os.access(path, os.W_OK):
    blocked = path
  if blocked is not None:
    raise UsageError(
      f"cannot write {path}: {blocked} is read-only for this user. Fix its permissions "
      f"or choose another path with {flag}"
    )
