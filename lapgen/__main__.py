"""`python -m lapgen` runs the command-line interface."""

from lapgen.cli.main import main

if __name__ == "__main__":
    main()
