"""Container entry point: `serve` starts the launcher (SageMaker runs `<image> serve`)."""

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch the container command.

    Parameters
    ----------
    argv
        Command-line arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        Process exit status.
    """
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "serve":
        print("usage: python -m inference_server serve", file=sys.stderr)
        return 2
    from inference_server.launcher import main as launcher_main

    return launcher_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
