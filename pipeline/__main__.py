"""`python -m pipeline` is the `colorize` command (and `main` here its console script)."""

import sys


def main() -> int:
    # Ctrl-C while the command's modules are still importing (its first few tenths of a second)
    # would print a traceback: cli.main handles it from then on
    try:
        from pipeline.cli import main as cli_main
    except KeyboardInterrupt:
        print("colorize: interrupted", file=sys.stderr)
        return 130
    code = cli_main()
    from pipeline.cli import SIGPIPE_EXIT, stdout_closed

    return SIGPIPE_EXIT if stdout_closed() else code  # a reader gone before the last flush


if __name__ == "__main__":
    sys.exit(main())
