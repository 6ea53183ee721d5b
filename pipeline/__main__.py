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
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
