"""The ``lorita`` command: demo, train, compress, evaluate, report, experiment, models, datasets.

Example:
    >>> main(["--version"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading

import lorita
from lorita.errors import LoritaError


def build_parser() -> argparse.ArgumentParser:
    from lorita.cli import compress_cmd, demo_cmd, evaluate_cmd, experiment_cmd, info_cmd, report_cmd, train_cmd

    parser = argparse.ArgumentParser(
        prog="lorita", description="Low-rank induced training (LoRITa) and structure-preserving compression.",
        epilog="run 'lorita COMMAND --help' for each command's options and an example")
    parser.add_argument("--version", action="version", version=f"lorita {lorita.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    parser.add_argument("--log-time", action="store_true",
                        help="each line logged after the time it came (HH:MM:SS), for long runs logged to a file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_cmd.add_parser(sub)
    train_cmd.add_parser(sub)
    compress_cmd.add_parser(sub)
    evaluate_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    experiment_cmd.add_parser(sub)
    info_cmd.add_parsers(sub)
    for command in sub.choices.values():
        command.formatter_class = DefaultsHelpFormatter
    return parser


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written, and every option's default in its help (unless None or off, or already said)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is None or action.default is False \
                or action.default == [] or action.default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush does not fail on a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a file descriptor
        pass


_UNSET = object()


def given_flags(parser: argparse.ArgumentParser, argv: list[str], command: str | None) -> set[str]:
    """The options of ``command`` written out in ``argv`` (by ``dest``), whatever their values: a flag given at its
    default counts as given (``lorita train --resume`` takes the run's own values for the others).

    Example:
        >>> sorted(given_flags(build_parser(), ["train", "--out", "r", "--depth", "3", "--resume"], "train"))
        ['depth', 'out', 'resume']
    """
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if command is None or not subparsers or command not in argv:
        return set()
    sub = subparsers[0].choices[command]
    # a placeholder each, which parsing keeps where the option is not written (defaults fill only what is missing);
    # options that add to what is there (append, count) start from None, which they never leave as it is
    grows = (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction, argparse._ExtendAction)
    unset = {a.dest: None if isinstance(a, grows) else _UNSET for a in sub._actions if a.dest != argparse.SUPPRESS}
    seen = argparse.Namespace(**unset)
    sub.parse_known_args(argv[argv.index(command) + 1:], seen)
    return {dest for dest, value in unset.items() if getattr(seen, dest) is not value}


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is running out of memory: Python's MemoryError, or PyTorch's failed allocation (a
    RuntimeError saying so on the CPU, its OutOfMemoryError subclass on a GPU).

    Example:
        >>> _out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate "
        ...                             "memory: you tried to allocate 65589673984 bytes")), _out_of_memory(KeyError())
        (True, False)
    """
    text = str(err)
    return isinstance(err, MemoryError) or isinstance(err, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower())


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, ``kill`` and job schedulers send), raised where the command is, so that it
    stops as after Ctrl-C: its staging folder and lock cleaned up, or a training's checkpoint kept for --resume."""


def _terminate(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_stops_cleanly():
    """SIGTERM raises ``Terminated`` in the command while it runs (in the main thread, where it is not ignored); the
    earlier handler is put back after it, as a notebook or a test calling ``main`` expects.

    Example:
        >>> with _sigterm_stops_cleanly():
        ...     signal.getsignal(signal.SIGTERM) is _terminate
        True
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield  # elsewhere Python cannot set a handler; an ignored SIGTERM (nohup-like launchers) stays ignored
        return
    earlier = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, earlier)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.given = given_flags(parser, argv, getattr(args, "command", None))
    when = "%(asctime)s " if args.log_time else ""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=when + "%(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    if not args.verbose:  # the workflow's own progress lines, without the library's details
        runs = logging.getLogger("lorita.runs")
        for old in [h for h in runs.handlers if getattr(h, "lorita_cli", False)]:
            runs.removeHandler(old)  # an earlier main() in this process bound a stream that may be gone now
        handler = logging.StreamHandler()  # today's sys.stderr
        handler.setFormatter(logging.Formatter(when + "%(message)s", "%H:%M:%S"))
        handler.lorita_cli = True
        runs.addHandler(handler)
        runs.setLevel(logging.INFO)
        runs.propagate = False
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _sigterm_stops_cleanly():
            return args.func(args)
    except LoritaError as err:
        print(f"lorita {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``lorita evaluate RUN | head -1``): quiet, as Unix tools are
        _silence_stdout()
        return 141  # what a shell reports for a command ended by SIGPIPE
    except OSError as err:  # full disk, permissions: files already written stay intact (atomic writes)
        print(f"lorita {args.command}: error: {err.strerror or err} ({err.filename or 'file system'}); "
              "files written before stay intact", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        print(f"lorita {args.command}: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}",
              file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130  # as a shell reports SIGTERM and SIGINT
    except Exception as err:  # a bug here or in a library below: said in one line (-v: the whole traceback)
        if _out_of_memory(err):
            print(f"lorita {args.command}: error: out of memory; use a smaller model, batch or input",
                  file=sys.stderr)
            return 1
        if args.verbose:
            raise
        print(f"lorita {args.command}: internal error: {type(err).__name__}: {' '.join(str(err).split())[:500]} (a "
              "bug in lorita or a library it uses: run again with -v for the traceback, and report it)",
              file=sys.stderr)
        return 1
