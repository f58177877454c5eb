"""The `accord` command (see accord_cli.core for the options, tokens and exit codes)."""

from __future__ import annotations

import os
import sys

import grpc
import typer
from typer._click import exceptions as click_errors  # typer's own click

from accord_cli import (  # noqa: F401  (they register their commands)
    audit,
    department,
    lifecycle,
    money,
    openslo,
    signals_cmd,
    tokens,
    validate,
    webhooks,
)
from accord_cli.core import app, rpc_failed, say

GLOBAL_FLAGS = ("--json",)
GLOBAL_OPTIONS = ("--token", "--addr", "--profile")  # each followed by its value


def hoisted(args: list[str]) -> list[str]:
    """The global options are accepted anywhere on the line: moved before the subcommand (up
    to a `--`)."""
    end = args.index("--") if "--" in args else len(args)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < end:
        a = args[i]
        if a in GLOBAL_FLAGS or (a.split("=", 1)[0] in GLOBAL_OPTIONS and "=" in a):
            front.append(a)
        elif a in GLOBAL_OPTIONS and i + 1 < end:
            front += [a, args[i + 1]]
            i += 1
        else:
            rest.append(a)
        i += 1
    return front + rest + args[end:]


def main(argv: list[str] | None = None) -> int:
    args = hoisted(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=args, prog_name="accord", standalone_mode=False)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except click_errors.NoArgsIsHelpError as e:  # the help was printed
        if e.format_message().strip():
            print(e.format_message(), file=sys.stderr)
        return 2
    except click_errors.ClickException as e:
        # Usage errors: one line, naming the command to ask for help.
        where = e.ctx.command_path if isinstance(e, click_errors.UsageError) and e.ctx else "accord"
        say(f"{where}: {e.format_message()} (see {where} --help)")
        return e.exit_code
    except typer.Abort:
        return 130
    except grpc.RpcError as e:  # a call made outside `channel(…)`
        try:
            rpc_failed("the service", e)
        except typer.Exit as x:
            return x.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `accord list | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the interpreter flushes it at exit)
        return 1
    except Exception as e:
        say(f"accord: internal error: {type(e).__name__}: {e}")
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
